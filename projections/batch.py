"""Applying the ledger to the projection tables, one batch of events per transaction.

A batch reads the next events after the checkpoint, folds them into the rows they
touch, writes the rows with a few multi-row statements per table and moves the
checkpoint, all in one transaction: it lands whole or not at all.

Two things keep it fast. Rows are remembered between batches, as long as the
checkpoint in the table is still the one this applier committed last (nobody else
wrote in between); otherwise they are loaded again. And while one batch's writes run
on the server, the next batch is read and decoded on a second connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import kwargs_row

from ledger.decisions import TERMINAL
from ledger.events import DEVICE_EVENTS, JOB_EVENTS, JobAssigned
from ledger.sqlfile import load_queries
from ledger.store import Checkpoint
from projections.fold import Fold
from projections.reading import Read, connect, fill_gaps, read_checkpoint, read_events
from projections.rows import DeviceRow, JobRow
from projections.writing import write_statements

__all__ = ["BatchApplier", "connect"]

_log = logging.getLogger(__name__)
_QUERIES = load_queries(Path(__file__).with_name("batch.sql"))


class _Moved(Exception):
    """Another applier moved the checkpoint since this one read it."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


class BatchApplier:
    """Applies batches of events under one projector name, remembering rows between them.

    Batches are pipelined: while one batch's rows are written and committed on one
    connection, the next batch is read, decoded and folded on the other. Its fold
    starts from the remembered rows, which already hold the batch in flight; its
    transaction starts only once that batch has committed, and first checks that
    the checkpoint is where it expects it to be.
    """

    def __init__(self, name: str, batch_size: int, *, remember: int = 100_000) -> None:
        self.name = name
        self.batch_size = batch_size
        self._remember_at_most = remember
        self._jobs: dict[UUID, JobRow] = {}
        self._devices: dict[UUID, DeviceRow] = {}
        #: Where the remembered rows are exact: the checkpoint this applier committed last.
        self._remembered_at: Checkpoint | None = None
        #: Events read past in the committed batches of the current ``apply_all``.
        self._applied = 0

    async def apply_all(
        self,
        conn: psycopg.AsyncConnection[Any],
        ahead: psycopg.AsyncConnection[Any],
        *,
        stop: asyncio.Event | None = None,
        committed: Callable[[], None] | None = None,
        pace_s: float = 0.0,
    ) -> int:
        """Apply batches until none is left or *stop* is set; return the events read past.

        *conn* writes and *ahead* reads, both autocommit connections (see ``connect``).
        *committed* is called after each batch commits. After a batch that was not full
        (the reader has caught up), *pace_s* passes before the next read: while events
        keep trickling in, they then come in batches of that many seconds' worth, not
        in a transaction each.
        """
        start = await read_checkpoint(conn, self.name)
        self._applied = 0
        while True:
            try:
                await self._pipeline(conn, ahead, start, stop, committed, pace_s)
                return self._applied
            except _Moved as moved:
                # Someone else applied batches meanwhile: start again from where they left it.
                _log.info("projector %s: another applier moved the checkpoint", self.name)
                self._forget()
                start = moved.checkpoint
            except BaseException:
                # The remembered rows were changed by a batch that did not commit.
                self._forget()
                raise

    async def _pipeline(
        self,
        conn: psycopg.AsyncConnection[Any],
        ahead: psycopg.AsyncConnection[Any],
        start: Checkpoint,
        stop: asyncio.Event | None,
        committed: Callable[[], None] | None,
        pace_s: float,
    ) -> None:
        if start != self._remembered_at:
            self._forget()
        writing: asyncio.Task[None] | None = None
        in_flight: Fold | None = None
        try:
            events = await read_events(ahead, start, self.batch_size)
            while True:
                if not events:
                    if writing is None or in_flight is None:
                        return
                    # That read ran while the batch in flight was uncommitted, and so could
                    # see nothing committed after it began: wait for it, then read again.
                    await writing
                    writing = None
                    self._committed(in_flight, None, start, committed)
                    if stop is not None and stop.is_set():
                        return
                    events = await read_events(ahead, start, self.batch_size)
                    continue
                fold = await self._fold(ahead, events)
                end = events[-1].checkpoint
                if writing is not None and in_flight is not None:
                    await writing
                    self._committed(in_flight, fold, start, committed)
                taken = asyncio.Event()
                writing = asyncio.create_task(self._commit(conn, start, end, events, fold, taken))
                await _first(taken, writing)
                start, in_flight = end, fold
                if pace_s and len(events) < self.batch_size:
                    await asyncio.sleep(pace_s)
                stopping = stop is not None and stop.is_set()
                events = [] if stopping else await read_events(ahead, start, self.batch_size)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)

    async def _commit(
        self,
        conn: psycopg.AsyncConnection[Any],
        start: Checkpoint,
        end: Checkpoint,
        events: list[Read],
        fold: Fold,
        taken: asyncio.Event,
    ) -> None:
        """Write and move the checkpoint in one transaction; set *taken* once the
        rows are serialised, after which the next batch may change them in memory."""
        async with conn.transaction():
            cursor = await conn.execute(_QUERIES["lock_checkpoint"], {"name": self.name})
            row = await cursor.fetchone()
            assert row is not None
            locked = Checkpoint(txid=row[0], position=row[1])
            if locked != start:
                raise _Moved(locked)
            statements = write_statements(fold)
            taken.set()
            # Sent in one go, so the server works through them while the next batch is
            # decoded and folded here; the pipeline's end waits for them all.
            async with conn.pipeline():
                for query, params in statements:
                    await conn.execute(query, params)
                await conn.execute(
                    _QUERIES["save_checkpoint"],
                    {
                        "name": self.name,
                        "txid": end.txid,
                        "position": end.position,
                        "applied": len(events),
                    },
                )

    def _committed(
        self,
        fold: Fold,
        next_fold: Fold | None,
        checkpoint: Checkpoint,
        committed: Callable[[], None] | None,
    ) -> None:
        """Note that *fold*'s batch committed; *next_fold* is the one folded after it.

        Rows may be forgotten now that the tables hold them, but not those of the next
        batch: the tables do not hold its changes yet.
        """
        self._applied += fold.events
        pending = next_fold.jobs if next_fold is not None else {}
        if len(self._jobs) + len(self._devices) > self._remember_at_most:
            self._jobs = dict(pending)
            self._devices = dict(next_fold.devices) if next_fold is not None else {}
        for job_id, row in fold.jobs.items():
            # A finished job gets no more events; remembering it would only use memory.
            if row.status in TERMINAL and job_id not in pending:
                self._jobs.pop(job_id, None)
        if next_fold is None:
            self._remembered_at = checkpoint
        if committed is not None:
            committed()

    # ---- rows -----------------------------------------------------------------------------

    async def _fold(self, conn: psycopg.AsyncConnection[Any], events: list[Read]) -> Fold:
        jobs: dict[UUID, JobRow] = {}
        devices: dict[UUID, DeviceRow] = {}
        await self._rows(conn, events, jobs, devices)
        versions = {job_id: row.version for job_id, row in jobs.items()}
        versions.update((device_id, row.version) for device_id, row in devices.items())
        filled = await fill_gaps(conn, events, versions)
        if len(filled) != len(events):
            await self._rows(conn, filled, jobs, devices)
        fold = Fold(jobs, devices, events=len(events))
        for recorded in filled:
            fold.apply(
                recorded.stream_id,
                recorded.version,
                recorded.event,
                recorded.recorded_at,
                recorded.metadata,
            )
        self._jobs.update(fold.jobs)
        self._devices.update(fold.devices)
        return fold

    async def _rows(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Iterable[Read],
        jobs: dict[UUID, JobRow],
        devices: dict[UUID, DeviceRow],
    ) -> None:
        """Add the rows *events* touch to *jobs* and *devices*: remembered, else loaded."""
        missing_jobs, device_ids = set(), set()
        for recorded in events:
            event, stream_id = recorded.event, recorded.stream_id
            if isinstance(event, JOB_EVENTS):
                if stream_id not in jobs:
                    job = self._jobs.get(stream_id)
                    if job is None:
                        missing_jobs.add(stream_id)
                    else:
                        jobs[stream_id] = job
                if isinstance(event, JobAssigned):
                    device_ids.add(event.device_id)
            elif isinstance(event, DEVICE_EVENTS):
                device_ids.add(stream_id)
        if missing_jobs:
            job_rows = conn.cursor(row_factory=kwargs_row(JobRow))
            await job_rows.execute(_QUERIES["load_jobs"], {"job_ids": list(missing_jobs)})
            jobs.update((job.job_id, job) for job in await job_rows.fetchall())
        device_ids.update(row.device_id for row in jobs.values() if row.device_id is not None)
        missing = _take(device_ids - devices.keys(), self._devices, devices)
        if missing:
            device_rows = conn.cursor(row_factory=kwargs_row(DeviceRow))
            await device_rows.execute(_QUERIES["load_devices"], {"device_ids": list(missing)})
            devices.update((device.device_id, device) for device in await device_rows.fetchall())

    def _forget(self) -> None:
        self._jobs.clear()
        self._devices.clear()
        self._remembered_at = None


def _take(ids: set[UUID], remembered: dict[UUID, Any], into: dict[UUID, Any]) -> set[UUID]:
    """Copy the remembered rows of *ids* into *into*; return the ids not remembered."""
    missing = set()
    for row_id in ids:
        row = remembered.get(row_id)
        if row is None:
            missing.add(row_id)
        else:
            into[row_id] = row
    return missing


async def _first(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Wait until *event* is set or *task* ended; raise what *task* raised."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiting, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if task.done() and not event.is_set():
        task.result()
