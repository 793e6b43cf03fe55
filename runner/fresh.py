"""Jobs grouped a moment ago, announced by their submit or read straight from the ledger.

The jobs table (runner/queue_view.py) is where slots find work, and the guarantee:
every runnable job reaches it. But it is a hop behind the ledger: a job submitted now
is there only once the projector has read and applied it, which at idle is most of
the time from submit to start. An idle slot need not wait for that. The API groups a
job as it submits it, so the job's JobGrouped is in the ledger when the submit
commits, and the submit's notification carries the job (ledger/announcement.py). When
a notification carries no jobs (or the agent reconnected), the agent reads the
ledger's new events itself, in commit-safe order like any reader (ledger/store.sql,
read_after). Either way its idle slots are offered the jobs grouped since.

A fresh job is only a candidate, taken out of here when a claim goes for it. The
claim appends its JobAssigned at the version the JobGrouped left, so a job that moved
on meanwhile (claimed elsewhere, cancelled) loses that append; whatever is not taken
while fresh is in the jobs table by then, and is claimed from there. Only first
attempts are fresh: retries and hand-backs come through the jobs table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

import attrs
import psycopg

from ledger.announcement import Announced, GroupedJob, announced
from ledger.codec import structure
from ledger.errors import InvalidEvent
from ledger.events import JobSubmitted
from ledger.store import Checkpoint, head
from ledger.wakeup import Channel
from runner._sql import QUERIES
from runner.policy import QueuedGroup
from runner.queue_view import UnitKey, running_elsewhere

__all__ = ["FreshJob", "FreshJobs"]

_log = logging.getLogger(__name__)

#: After this long a job is in the jobs table, and ranked with everything else there.
_FRESH_FOR_S = 2.0
#: Events read per look. A look that finds this many is no idle moment: the backlog is
#: left to the jobs table, and the next look starts from the ledger's head.
_READ_LIMIT = 500


@attrs.frozen(kw_only=True)
class FreshJob(GroupedJob):
    #: When the agent heard of it (monotonic clock).
    seen_at: float

    @property
    def unit(self) -> UnitKey:
        return (self.group_id, self.submitted.app_version_id)


class FreshJobs:
    """The agent's jobs grouped since it last looked; shared by its slots."""

    def __init__(self) -> None:
        self._checkpoint = Checkpoint()
        self._jobs: dict[UUID, FreshJob] = {}
        #: Set by a notification that did not say which jobs it was about.
        self.look_wanted = False
        self._looking = asyncio.Lock()

    async def start(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Begin at the ledger's head: what came before is for the jobs table."""
        self._checkpoint = await head(conn)

    def heard(self, channel: Channel, payload: str | None) -> Announced | None:
        """Take the jobs a JOBS notification announces, and return what it announced.

        One that announces none (or a reconnect, *payload* None) sends the next look to
        the ledger. Jobs a submit gave to a slot (runner/standing.py) are that slot's,
        not kept here.
        """
        if channel is not Channel.JOBS:
            return None
        try:
            said = announced(payload or "")
        except InvalidEvent as error:
            _log.warning("ignoring a notification on %s: %s", channel.value, error)
            said = Announced(jobs=[])
        if not said.jobs:
            self.look_wanted = True
        now = time.monotonic()
        self._forget_stale(now)
        if said.assigned is None:
            for job in said.jobs:
                self._keep(FreshJob(**attrs.asdict(job, recurse=False), seen_at=now))
        return said

    async def look(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read what was grouped since the last read, if a notification asked for it."""
        async with self._looking:
            if self.look_wanted:
                self.look_wanted = False
                await self._read(conn)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(
            QUERIES["fresh_events"],
            {
                "txid": self._checkpoint.txid,
                "position": self._checkpoint.position,
                "limit": _READ_LIMIT,
            },
        )
        rows = await cursor.fetchall()
        now = time.monotonic()
        self._forget_stale(now)
        if len(rows) == _READ_LIMIT:
            self._checkpoint = await head(conn)
            return
        for txid, position, stream_id, version, group_id, submitted in rows:
            self._checkpoint = Checkpoint(txid=txid, position=position)
            if submitted is None:
                continue  # not a JobGrouped
            self._keep(
                FreshJob(
                    job_id=stream_id,
                    version=version,
                    group_id=UUID(group_id),
                    submitted=structure(submitted, JobSubmitted),
                    seen_at=now,
                )
            )

    def _keep(self, job: FreshJob) -> None:
        # Moved to the end: the jobs stay in the order they were heard of, oldest first.
        self._jobs.pop(job.job_id, None)
        self._jobs[job.job_id] = job

    def _forget_stale(self, now: float) -> None:
        # Oldest first, so that a notification costs the jobs it forgets, not all of them.
        while self._jobs:
            oldest = next(iter(self._jobs.values()))
            if now - oldest.seen_at < _FRESH_FOR_S:
                return
            del self._jobs[oldest.job_id]

    def any_for(self, target: str) -> bool:
        return any(job.submitted.target.value == target for job in self._jobs.values())

    def units(
        self, target: str, *, running: Mapping[UUID, UnitKey], slot: UUID
    ) -> list[QueuedGroup]:
        """The fresh jobs for *target*, summed up per claim unit as *slot* sees them
        (*running*: what each busy slot of the agent runs, by device id)."""
        queued: dict[UnitKey, list[FreshJob]] = defaultdict(list)
        for job in self._jobs.values():
            if job.submitted.target.value == target:
                queued[job.unit].append(job)
        running_here = running_elsewhere(running, slot)
        now = time.monotonic()
        return [
            QueuedGroup(
                group_id=unit,
                org_id=jobs[0].submitted.org_id,
                app_version_id=unit[1],
                queued=len(jobs),
                waits=_oldest_per_priority(jobs, now),
                active_slots=running_here.get(unit, 0),
            )
            for unit, jobs in queued.items()
        ]

    def take(self, unit: UnitKey, size: int) -> list[FreshJob]:
        """Remove and return up to *size* of *unit*'s fresh jobs, best first."""
        jobs = sorted(
            (job for job in self._jobs.values() if job.unit == unit),
            key=lambda job: (-job.submitted.priority, job.seen_at),
        )[:size]
        for job in jobs:
            del self._jobs[job.job_id]
        return jobs


def _oldest_per_priority(jobs: Iterable[FreshJob], now: float) -> tuple[tuple[int, float], ...]:
    """(priority, seconds the oldest job of it has been fresh) for each priority present."""
    waited: dict[int, float] = {}
    for job in jobs:
        priority = job.submitted.priority
        waited[priority] = max(waited.get(priority, 0.0), now - job.seen_at)
    return tuple(sorted(waited.items()))
