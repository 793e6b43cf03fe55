"""Appends the job events of every slot of an agent in few statements.

Slots hand events over and carry on; one task appends whatever has piled up since its
last append in one ``append_many`` (one statement, one commit), then looks again. So
under load each commit carries many jobs' events, and when idle an event goes out at
once. Each job's events keep their order: a job's new events wait for the append in
flight to land, since they expect the version it leaves behind.

An append loses (ConcurrencyConflict) when another writer moved a stream on: the API
cancelled the job, or a rescuer expired our lease. The streams that moved are found,
their events dropped and their jobs marked lost (that is the fencing: a result that
lost is never recorded); the rest is appended again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import attrs
import psycopg

from ledger.decisions import decide
from ledger.errors import ConcurrencyConflict
from ledger.events import Event, Metadata
from ledger.store import StreamWrite, append_many
from ledger.wakeup import Notifier
from runner._sql import QUERIES
from runner.jobs import HeldJob

__all__ = ["EventWriter"]

_log = logging.getLogger(__name__)
_RECONNECT_DELAY_S = 1.0


@attrs.define(eq=False)
class _Pending:
    job: HeldJob
    events: list[Event] = attrs.field(factory=list)
    done: list[asyncio.Future[None]] = attrs.field(factory=list)


class EventWriter:
    """Batches job events into appends on its own connection."""

    def __init__(
        self,
        url: str,
        *,
        actor: str,
        notifier: Notifier,
        on_lost: Callable[[Sequence[UUID]], None],
    ) -> None:
        self._url = url
        self._actor = actor
        self._notifier = notifier
        self._on_lost = on_lost
        self._pending: dict[UUID, _Pending] = {}
        self._wanted = asyncio.Event()

    def write(self, job: HeldJob, events: Iterable[Event]) -> asyncio.Future[None]:
        """Decide *events* on the job's state and queue them; the future ends once appended.

        A job that is lost (cancelled, rescued) gets nothing appended (the future is done at
        once). Raises TransitionRefused if the job's history does not allow an event.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        events = list(events)
        if job.lost or not events:
            done.set_result(None)
            return done
        for event in events:
            job.state = decide(job.state, event)
        pending = self._pending.get(job.job_id)
        if pending is None:
            pending = self._pending[job.job_id] = _Pending(job)
        pending.events.extend(events)
        pending.done.append(done)
        self._wanted.set()
        return done

    async def run(self) -> None:
        """Append until cancelled; cancel only once the futures handed out are awaited."""
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                batch, self._pending = self._pending, {}
                while batch:
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                        batch = await self._append(conn, batch)
                    except psycopg.OperationalError as error:
                        _log.warning("cannot append job events (%s); retrying", error)
                        conn = None
                        await asyncio.sleep(_RECONNECT_DELAY_S)
        finally:
            if conn is not None:
                await conn.close()

    async def _append(
        self, conn: psycopg.AsyncConnection[Any], batch: dict[UUID, _Pending]
    ) -> dict[UUID, _Pending]:
        """Append *batch*; return what is left to append (streams that moved are dropped)."""
        self._settle(p for p in batch.values() if p.job.lost)
        live = {job_id: p for job_id, p in batch.items() if not p.job.lost}
        if not live:
            return {}
        writes = [
            StreamWrite(
                stream_id=job_id,
                expected_version=p.job.version,
                events=p.events,
                metadata=Metadata(org_id=p.job.org_id, actor=self._actor),
            )
            for job_id, p in live.items()
        ]
        try:
            await append_many(conn, writes)
        except ConcurrencyConflict:
            moved, landed = await self._check(conn, live.values())
            for job_id in moved:
                live[job_id].job.lost = True
            self._settle(live[job_id] for job_id in moved)
            self._landed([live[job_id] for job_id in landed])
            if moved:
                self._on_lost(sorted(moved))
            return {job_id: p for job_id, p in live.items() if job_id not in moved | landed}
        self._notifier.poke()
        self._landed(list(live.values()))
        return {}

    def _landed(self, pendings: list[_Pending]) -> None:
        for p in pendings:
            p.job.version += len(p.events)
        self._settle(pendings)

    async def _check(
        self, conn: psycopg.AsyncConnection[Any], pending: Iterable[_Pending]
    ) -> tuple[set[UUID], set[UUID]]:
        """Split the streams of a lost append: moved on by someone else, or already ours.

        The second happens when an earlier try committed but its connection broke
        before saying so; those events are in the ledger and must not be written again.
        A stream that is not even at the version we hold it at counts as moved: what we
        appended to it was lost (a claim lost in a crash of the server, say).
        """
        pendings = {p.job.job_id: p for p in pending}
        after = min(p.job.version for p in pendings.values())
        params = {"ids": list(pendings), "after": after}
        cursor = await conn.execute(QUERIES["stream_tails"], params)
        reached: set[UUID] = set()
        tails: dict[UUID, list[str | None]] = {job_id: [] for job_id in pendings}
        for job_id, version, actor in await cursor.fetchall():
            held_at = pendings[job_id].job.version
            if version == held_at:
                reached.add(job_id)
            elif version > held_at:
                tails[job_id].append(actor)
        moved, landed = set(), set()
        for job_id, actors in tails.items():
            if job_id not in reached:
                moved.add(job_id)
            elif len(actors) == len(pendings[job_id].events) and set(actors) == {self._actor}:
                landed.add(job_id)
            elif actors:
                moved.add(job_id)
        return moved, landed

    @staticmethod
    def _settle(pendings: Iterable[_Pending]) -> None:
        for p in pendings:
            for done in p.done:
                if not done.done():
                    done.set_result(None)
