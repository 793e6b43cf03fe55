"""Garbage collection of blobs, run by the API that stores them: at start, then hourly.

Every API process runs it; running it twice at once only deletes the same rows once, so
a scaled-out API needs no coordination. What is collected is ledger.blobs.collect_garbage's
rule: past retention since stored or last named, and named by no unfinished job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.blobs import collect_garbage

__all__ = ["BlobCollector"]

_log = logging.getLogger(__name__)


class BlobCollector:
    """Removes blobs whose retention has passed, every *interval_s* seconds."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], retention: dt.timedelta, *, interval_s: float
    ) -> None:
        self._pool = pool
        self._retention = retention
        self._interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until *stop* is set."""
        while not stop.is_set():
            await self.collect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)

    async def collect(self) -> None:
        try:
            async with self._pool.connection() as conn:
                removed = await collect_garbage(conn, self._retention)
        except psycopg.Error as error:
            _log.warning("cannot collect unreferenced blobs: %s", error)
            return
        if removed:
            _log.info("removed %d blobs past their retention", len(removed))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BlobCollector]:
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name="qgjob-blob-collector")
        try:
            yield self
        finally:
            # The event as well as the cancel: a cancel delivered while a collection was
            # talking to the database has been seen to go missing (the loop then slept on
            # for its hour and the API never stopped); the event ends the loop regardless.
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
