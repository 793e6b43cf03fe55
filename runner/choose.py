"""Choosing what a claim takes: the best unit of a source of work, and its best jobs.

Two sources, ranked by the same policy (runner/policy.py):

- the jobs table, as the agent's summary of it shows it (runner/queue_view.py): the
  unit's best jobs are locked (SKIP LOCKED) and read at the version their rows show;
- the jobs grouped since the agent last read the ledger (runner/fresh.py), offered to
  idle slots first, at the version their JobGrouped left.

Either way a chosen job is only the claim's candidate: the claim appends its
JobAssigned at that version (runner/claim.py), and that append decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import attrs
import psycopg

from ledger.announcement import GroupedJob
from ledger.decisions import JobState, JobStatus, decide
from ledger.events import JobAssigned
from runner._sql import QUERIES
from runner.fresh import FreshJobs
from runner.jobs import HeldJob
from runner.policy import QueuedGroup, batch_size, rank_groups
from runner.queue_view import UnitKey

if TYPE_CHECKING:
    from runner.claim import ClaimRequest, SlotIdentity

__all__ = [
    "Chosen",
    "assignment",
    "choose_fresh",
    "choose_fresh_unlimited",
    "choose_queued",
    "grouped_held",
]

#: Claim units tried per claim; more are rarely worth it (their rows are likely stale).
_UNITS_TRIED = 8


@attrs.frozen(kw_only=True)
class Chosen:
    """A unit's jobs a claim goes for, with their state as of their JobAssigned."""

    org_id: str
    unit: UnitKey
    jobs: list[HeldJob]


def assignment(attempt: int, slot: SlotIdentity) -> JobAssigned:
    return JobAssigned(attempt=attempt, device_id=slot.device_id, agent_id=slot.agent_id)


async def choose_queued(conn: psycopg.AsyncConnection[Any], request: ClaimRequest) -> Chosen | None:
    """The best jobs of the jobs table for the slot, locked; None when none is runnable."""
    slot, view, running, policy = request.slot, request.view, request.running, request.policy
    units, target_slots = await view.units(conn, running=running, slot=slot.device_id)
    full_orgs: set[str] = set()
    for unit in rank_groups(units, installed=request.installed, policy=policy)[:_UNITS_TRIED]:
        key = group_id, app_version_id = _unit_key(unit)
        if unit.org_id in full_orgs or view.queued(key) == 0:
            continue
        size = batch_size(
            unit, target_slots=target_slots, installed=request.installed, policy=policy
        )
        running[slot.device_id] = key
        view.claimed(key, size)
        if unit.org_id in view.limited_orgs and not await _org_has_room(conn, unit.org_id):
            full_orgs.add(unit.org_id)
            view.claimed(key, -size)
            continue
        cursor = await conn.execute(
            QUERIES["lock_jobs"],
            {
                "group_id": group_id,
                "app_version_id": app_version_id,
                "target": slot.target,
                "ageing_per_s": policy.ageing_per_s,
                "limit": size,
            },
        )
        jobs = [
            _held(
                *record, group_id=group_id, slot=slot, default_timeout_s=request.default_timeout_s
            )
            for record in await cursor.fetchall()
        ]
        if not jobs:
            view.exhausted(key)
            continue
        if len(jobs) < size:
            view.exhausted(key)
        return Chosen(org_id=unit.org_id, unit=key, jobs=jobs)
    running.pop(slot.device_id, None)
    return None


async def choose_fresh(
    conn: psycopg.AsyncConnection[Any], request: ClaimRequest, fresh: FreshJobs
) -> Chosen | None:
    """The best of the fresh jobs for the slot, taken out of *fresh*; None when none is."""
    view = request.view
    for unit in _ranked_fresh(request, fresh):
        if unit.org_id in view.limited_orgs and not await _org_has_room(conn, unit.org_id):
            continue
        return _take_fresh(request, fresh, unit)
    return None


def choose_fresh_unlimited(request: ClaimRequest, fresh: FreshJobs) -> Chosen | None:
    """The best of the fresh jobs for the slot, taken out of *fresh*, when their org has no
    parallel limit: then nothing is left to check in the database before the claim."""
    ranked = _ranked_fresh(request, fresh)
    if not ranked or ranked[0].org_id in request.view.limited_orgs:
        return None
    return _take_fresh(request, fresh, ranked[0])


def _ranked_fresh(request: ClaimRequest, fresh: FreshJobs) -> list[QueuedGroup]:
    slot = request.slot
    units = fresh.units(slot.target, running=request.running, slot=slot.device_id)
    return rank_groups(units, installed=request.installed, policy=request.policy)[:_UNITS_TRIED]


def _take_fresh(request: ClaimRequest, fresh: FreshJobs, unit: QueuedGroup) -> Chosen:
    key = _unit_key(unit)
    size = batch_size(
        unit,
        target_slots=request.view.target_slots,
        installed=request.installed,
        policy=request.policy,
    )
    request.running[request.slot.device_id] = key
    jobs = [
        grouped_held(job, request.slot, request.default_timeout_s) for job in fresh.take(key, size)
    ]
    return Chosen(org_id=unit.org_id, unit=key, jobs=jobs)


def _unit_key(unit: QueuedGroup) -> tuple[UUID, str]:
    key = unit.group_id
    assert isinstance(key, tuple)
    return key[0], key[1]


async def _org_has_room(conn: psycopg.AsyncConnection[Any], org_id: str) -> bool:
    params = {"org_id": org_id}
    limit = await (await conn.execute(QUERIES["lock_org_limit"], params)).fetchone()
    if limit is None:
        return True
    count = await (await conn.execute(QUERIES["org_occupancy"], params)).fetchone()
    assert count is not None
    return bool(count[0] < limit[0])


def grouped_held(job: GroupedJob, slot: SlotIdentity, default_timeout_s: float) -> HeldJob:
    """A job as its JobGrouped left it, taken by *slot* for its first attempt."""
    submitted = job.submitted
    return _held(
        job.job_id,
        job.version,
        JobStatus.GROUPED,
        0,
        submitted.max_attempts,
        submitted.test_path,
        submitted.build,
        submitted.timeout_s,
        submitted.org_id,
        group_id=job.group_id,
        slot=slot,
        default_timeout_s=default_timeout_s,
    )


def _held(
    job_id: UUID,
    version: int,
    status: str,
    attempts: int,
    max_attempts: int,
    test_path: str,
    build: str | None,
    timeout_s: float | None,
    org_id: str,
    *,
    group_id: UUID,
    slot: SlotIdentity,
    default_timeout_s: float,
) -> HeldJob:
    """A chosen job, from the columns lock_jobs selects (or the same facts of a fresh one)."""
    before = JobState(
        version=version,
        status=JobStatus(status),
        attempt=attempts,
        max_attempts=max_attempts,
        group_id=group_id,
    )
    return HeldJob(
        job_id=job_id,
        org_id=org_id,
        test_path=test_path,
        build=build,
        timeout_s=timeout_s or default_timeout_s,
        max_attempts=max_attempts,
        state=decide(before, assignment(attempts + 1, slot)),
        version=version,
    )
