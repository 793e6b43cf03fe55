"""An agent's picture of the queue for one target, shared by its slots for a moment.

Summarising the queue means aggregating every queued job of the target, which costs
milliseconds once thousands wait; done for every claim it would dominate a busy
runner. So an agent's slots share one summary for up to ``ttl_s`` (refreshed by one
slot while the others wait for it), adjusted for what this agent's own slots claimed
and run since; other agents' activity may be that much out of date. The summary only
ranks: a claim still locks and appends at each job's version, so a stale picture
costs at most a wasted try, never a double assignment. A claim that finds nothing
marks the view stale, and so does the projector's word that the table moved on
(runner/agent.py), so an idle slot never waits on an old picture. Which orgs have
a parallel limit is read with the summary, so a new limit applies within ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import attrs
import psycopg

from runner._sql import QUERIES
from runner.policy import QueuedGroup

__all__ = ["QueueView", "UnitKey", "running_elsewhere"]

#: A claim unit: a group and one app version of it.
UnitKey = tuple[UUID, str]


@attrs.frozen(kw_only=True)
class _Unit:
    org_id: str
    #: (priority, monotonic time its oldest queued job was submitted), per priority.
    oldest: tuple[tuple[int, float], ...]
    #: Slots of other agents running it when the summary was read.
    elsewhere: int


class QueueView:
    def __init__(self, target: str, agent_id: str, *, ttl_s: float) -> None:
        self.target = target
        self._agent_id = agent_id
        self._ttl_s = ttl_s
        self._units: dict[UnitKey, _Unit] = {}
        self._queued: dict[UnitKey, int] = {}
        self._target_slots = 1
        #: Orgs with a parallel limit; a claim for one locks and counts, the others do not.
        self.limited_orgs: frozenset[str] = frozenset()
        self._read_at = -float("inf")
        self._refreshing = asyncio.Lock()
        #: Held by the one idle slot of the agent claiming for this target (runner/slot.py).
        self.idle_claims = asyncio.Lock()
        #: The wake-up generation at which an idle slot last found nothing to claim.
        self.found_nothing_at: int | None = None

    def invalidate(self) -> None:
        self._read_at = -float("inf")

    def exhausted(self, unit: UnitKey) -> None:
        """A claim found nothing to take of *unit* (taken already, or locked)."""
        self._queued[unit] = 0

    def claimed(self, unit: UnitKey, jobs: int) -> None:
        """This agent is taking *jobs* jobs of *unit* (negative: gave up that many)."""
        if unit in self._queued:
            self._queued[unit] = max(0, self._queued[unit] - jobs)

    def queued(self, unit: UnitKey) -> int:
        return self._queued.get(unit, 0)

    @property
    def target_slots(self) -> int:
        """Live slots of the target, as of the last summary."""
        return self._target_slots

    async def any_queued(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether the summary, refreshed if stale, shows anything queued for the target."""
        async with self._refreshing:
            if time.monotonic() - self._read_at > self._ttl_s:
                await self._refresh(conn)
        return any(self._queued.values())

    async def units(
        self, conn: psycopg.AsyncConnection[Any], *, running: Mapping[UUID, UnitKey], slot: UUID
    ) -> tuple[list[QueuedGroup], int]:
        """The queued claim units, as *slot* sees them, and the live slots of the target.

        *running* is what each busy slot of this agent runs (or is claiming) now.
        """
        await self.any_queued(conn)
        # Counted after any wait above, so that claims that went first are seen.
        running_here = running_elsewhere(running, slot)
        now = time.monotonic()
        groups = [
            QueuedGroup(
                group_id=key,
                org_id=unit.org_id,
                app_version_id=key[1],
                queued=self._queued[key],
                waits=tuple((priority, now - since) for priority, since in unit.oldest),
                active_slots=unit.elsewhere + running_here.get(key, 0),
            )
            for key, unit in self._units.items()
            if self._queued[key] > 0
        ]
        return groups, self._target_slots

    async def _refresh(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(
            QUERIES["queue_summary"], {"target": self.target, "agent_id": self._agent_id}
        )
        read_at = time.monotonic()
        oldest: dict[UnitKey, list[tuple[int, float]]] = defaultdict(list)
        queued: dict[UnitKey, int] = defaultdict(int)
        facts: dict[UnitKey, tuple[str, int]] = {}
        target_slots = 1
        for group_id, app_version_id, org_id, priority, count, waited, elsewhere, slots in (
            await cursor.fetchall()
        ):
            key = (group_id, app_version_id)
            oldest[key].append((priority, read_at - waited))
            queued[key] += count
            facts[key] = (org_id, elsewhere)
            target_slots = max(1, slots)
        self._units = {
            key: _Unit(org_id=facts[key][0], oldest=tuple(sorted(since)), elsewhere=facts[key][1])
            for key, since in oldest.items()
        }
        self._queued = dict(queued)
        self._target_slots = target_slots
        cursor = await conn.execute(QUERIES["limited_orgs"])
        self.limited_orgs = frozenset(row[0] for row in await cursor.fetchall())
        self._read_at = read_at


def running_elsewhere(running: Mapping[UUID, UnitKey], slot: UUID | None) -> Counter[UnitKey]:
    """How many of the agent's slots other than *slot* run (or claim) each unit.

    *running* is what each busy slot of the agent runs, by device id.
    """
    return Counter(unit for device, unit in running.items() if device != slot)
