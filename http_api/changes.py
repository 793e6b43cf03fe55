"""Waking long-polls and event streams when the projections move on.

One LISTEN connection per process (ledger.wakeup.Listener) serves every waiting
request. It hears the projector say that the projections moved on; the watcher then
reads the projector checkpoints, and between notifications it reads them slowly in case
one was lost. Waiters are woken only when the checkpoints actually changed, and then
read the projections again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.sqlfile import load_queries
from ledger.wakeup import Listener

__all__ = ["ReadModelChanges"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_log = logging.getLogger(__name__)


class ReadModelChanges:
    """Broadcasts "the projections changed" to any number of waiting requests."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        listener: Listener,
        *,
        poll_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self._poll_s = poll_s
        self._changed = asyncio.Event()
        self._waiters = 0
        self._version: str | None = None

    def ticket(self) -> asyncio.Event:
        """Take before reading the projections; pass to wait() to hear of any later change."""
        return self._changed

    async def wait(self, ticket: asyncio.Event, timeout: float) -> bool:
        """Wait until the projections changed after *ticket* was taken, or *timeout* passed."""
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout):
                await ticket.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            await self._listener.wait(self._poll_s)
            if self._waiters:
                await self._check()

    async def _check(self) -> None:
        try:
            async with self._pool.connection(timeout=5.0) as conn:
                cursor = await conn.execute(_QUERIES["read_model_version"])
                row = await cursor.fetchone()
        except psycopg.Error as error:
            _log.warning("cannot read the projector checkpoints: %s", error)
            return
        version = None if row is None else str(row[0])
        if version != self._version:
            self._version = version
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReadModelChanges]:
        task = asyncio.create_task(self.run(), name="qgjob-read-model-changes")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
