"""The projector: keeps the read model up to date with the ledger, batch by batch.

``run`` is the service loop. It holds an advisory lock named after the projector on
a connection of its own, so that of several projectors started under one name one
works and the others wait to take over; it wakes on NOTIFY or on its poll timer,
whichever comes first, reads until nothing is new, and reconnects after errors.

Once woken it lets ``coalesce_s`` pass before reading, and as long as events trickle
in it lets as long pass after each batch that was not full. A job's submit, claim and
result commit within a few milliseconds of each other, each with its notification;
read one by one, they cost a batch transaction each, and the projector's work would
compete for the CPU with the API and the runners just when they are starting that job.
Nobody waits on the projector for that: devices claim from open_jobs, which the
ledger keeps (migrations/040_open_jobs.sql), so the delay only batches the projector's
work. A backlog is still
read in full batches, one after the other.

Correctness does not rest on that lock: every batch locks the checkpoint row first
(see projections/batch.py), so batches under one name never interleave. That is why
``catch_up`` may be called directly, without the lock, even while ``run`` is going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import psycopg

from ledger.sqlfile import load_queries
from ledger.wakeup import Channel, Listener, Notifier
from projections.batch import BatchApplier, connect

__all__ = ["Projector"]

_log = logging.getLogger(__name__)
_QUERIES = load_queries(Path(__file__).with_name("projector.sql"))
#: What a committed batch says: the projections moved on (for the API's waiters).
_CHANNELS = (Channel.PROJECTIONS,)


class Projector:
    """Applies the ledger's events to the projection tables under a checkpoint *name*.

    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "main",
        poll_interval: float = 1.0,
        coalesce_s: float = 0.05,
        batch_size: int = 1000,
    ) -> None:
        self.url = url
        self.name = name
        self.poll_interval = poll_interval
        self.coalesce_s = coalesce_s
        self.batch_size = batch_size
        self._batches = BatchApplier(name, batch_size)
        self._retry_delay = min(poll_interval, 1.0)
        self._active = False

    @property
    def active(self) -> bool:
        """True while this projector holds its name's lock and applies events."""
        return self._active

    async def catch_up(self) -> int:
        """Apply every event readable now; return how many were read past."""
        async with (
            await connect(self.url) as conn,
            await connect(self.url) as ahead,
            Notifier(self.url, channels=_CHANNELS) as notifier,
        ):
            return await self._batches.apply_all(conn, ahead, committed=notifier.poke)

    async def run(self, stop: asyncio.Event) -> None:
        """Project until *stop* is set; the batch in hand is finished first."""
        while not stop.is_set():
            try:
                await self._serve(stop)
            except (psycopg.Error, OSError) as error:
                _log.warning(
                    "projector %s: %s; retrying in %.1fs", self.name, error, self._retry_delay
                )
                await _sleep(stop, self._retry_delay)

    async def _serve(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as lock:
            if not await self._acquire(lock, stop):
                return
            try:
                self._active = True
                async with (
                    Listener(self.url, reconnect_delay=self._retry_delay) as listener,
                    Notifier(self.url, channels=_CHANNELS) as notifier,
                    await connect(self.url) as conn,
                    await connect(self.url) as ahead,
                ):
                    while not stop.is_set():
                        # If the lock's connection died, another projector may hold the lock
                        # now: this raises, and the loop goes back to waiting for it.
                        await lock.execute(_QUERIES["alive"])
                        await self._batches.apply_all(
                            conn,
                            ahead,
                            stop=stop,
                            committed=notifier.poke,
                            pace_s=self.coalesce_s,
                        )
                        await _woken(listener, stop, self.poll_interval)
                        await _sleep(stop, self.coalesce_s)
                        # What was announced meanwhile committed before this read begins.
                        listener.clear()
            finally:
                self._active = False
        _log.info("projector %s stopped", self.name)

    async def _acquire(self, lock: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> bool:
        told = False
        while not stop.is_set():
            cursor = await lock.execute(_QUERIES["try_lock"], {"name": self.name})
            row = await cursor.fetchone()
            if row is not None and row[0]:
                _log.info("projector %s is active", self.name)
                return True
            if not told:
                _log.info("projector %s: another one is active; waiting to take over", self.name)
                told = True
            await _sleep(stop, self.poll_interval)
        return False


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _woken(listener: Listener, stop: asyncio.Event, timeout: float) -> None:
    """Return when notified, when *timeout* passed or when *stop* is set."""
    waits = [
        asyncio.create_task(listener.wait(timeout)),
        asyncio.create_task(stop.wait()),
    ]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
