"""Claiming a batch: one short transaction that picks a group and assigns its jobs.

In one transaction the slot ends its previous batch's occupancy, takes the agent's
summary of the queue for its target (runner/queue_view.py), ranks it with
runner/policy.py, locks the best unit's org row and counts the org's busy slots (only
for orgs with a parallel limit: the lock serialises their claims, so the count is
exact), locks the unit's best jobs (SKIP LOCKED), appends a JobAssigned to each at the
version its row shows — one ``append_many``, all or nothing — and records the slot's
occupancy. The append is the arbiter: if any job moved on meanwhile, the whole claim
rolls back and is tried again, so exactly one slot owns an attempt.

An idle slot is also offered the jobs grouped since the agent last read the ledger
(runner/fresh.py), before the projector has put them in the jobs table. It ranks them
with the same policy and claims them the same way, but first: a slot that found the
table empty a moment ago has nothing older to prefer. Their append is the arbiter too.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any
from uuid import UUID

import attrs
import psycopg
from psycopg import errors as pg_errors

from ledger.decisions import JobState, JobStatus, decide
from ledger.errors import ConcurrencyConflict, QgjobError
from ledger.events import JobAssigned, Metadata
from ledger.store import StreamWrite, append_many
from runner._sql import QUERIES
from runner.fresh import FreshJob, FreshJobs
from runner.jobs import HeldJob
from runner.policy import ClaimPolicy, QueuedGroup, batch_size, rank_groups
from runner.queue_view import QueueView, UnitKey

__all__ = ["Claim", "LeaseLost", "SlotIdentity", "claim_batch"]

_log = logging.getLogger(__name__)
#: Claim units tried per claim; more are rarely worth it (their rows are likely stale).
_UNITS_TRIED = 8
_RETRIES = 5


class LeaseLost(QgjobError):
    """This agent's lease lapsed; its jobs are being handed to other agents."""


@attrs.frozen(kw_only=True)
class SlotIdentity:
    device_id: UUID
    agent_id: str
    target: str


@attrs.frozen(kw_only=True)
class Claim:
    """A batch a slot now owns: jobs of one group and app version."""

    group_id: UUID
    app_version_id: str
    org_id: str
    jobs: tuple[HeldJob, ...]


async def claim_batch(
    conn: psycopg.AsyncConnection[Any],
    slot: SlotIdentity,
    *,
    view: QueueView,
    running: dict[UUID, UnitKey],
    installed: Collection[str],
    policy: ClaimPolicy,
    default_timeout_s: float,
    fresh: FreshJobs | None = None,
) -> Claim | None:
    """Claim the best batch for *slot*, or None when nothing is runnable for it now.

    *view* is the agent's picture of the queue for the slot's target; *running* is what
    each busy slot of the agent runs, by device id. The unit a claim goes for is entered
    in *running* before the claim waits on the database, so that the agent's other
    slots, ranking meanwhile, count it as taken; it stays there when the claim succeeds.
    *fresh*, given to an idle slot, holds jobs too new for the view, tried first.
    *conn* must be in autocommit mode. Raises LeaseLost when the agent's lease lapsed.
    """
    request = _Request(
        slot=slot,
        view=view,
        running=running,
        installed=installed,
        policy=policy,
        default_timeout_s=default_timeout_s,
    )
    for _ in range(_RETRIES):
        try:
            # In pipeline mode a statement whose result is not needed yet goes out with
            # the next one that is: a fresh claim is two round trips, not five.
            async with conn.pipeline(), conn.transaction():
                claim = await _claim(conn, request, fresh)
            if claim is None:
                view.invalidate()
            return claim
        except (
            ConcurrencyConflict,
            pg_errors.DeadlockDetected,
            pg_errors.UniqueViolation,
        ) as error:
            # Someone appended to one of the jobs (a cancel, say) after we locked it; two
            # claims locked limited orgs in opposite orders; or the previous process of
            # this agent still occupies the device, its rescue under way. Look again.
            running.pop(slot.device_id, None)
            view.invalidate()
            _log.debug("claim for %s lost a race (%s); retrying", slot.device_id, error)
    return None


@attrs.frozen(kw_only=True)
class _Request:
    """One slot's claim: who asks, what its agent sees, and how it ranks (claim_batch)."""

    slot: SlotIdentity
    view: QueueView
    running: dict[UUID, UnitKey]
    installed: Collection[str]
    policy: ClaimPolicy
    default_timeout_s: float


async def _claim(
    conn: psycopg.AsyncConnection[Any], request: _Request, fresh: FreshJobs | None
) -> Claim | None:
    slot = request.slot
    ids = {"device_id": slot.device_id, "agent_id": slot.agent_id}
    # Its answer is read at the end, once the claim's own statements have been sent with
    # it; a lapsed lease raises then, and the claim's transaction rolls back.
    lease = await conn.execute(QUERIES["begin_claim"], ids)
    claim = None
    if fresh is not None:
        claim = await _claim_fresh(conn, request, fresh)
    if claim is None:
        claim = await _claim_queued(conn, request)
    row = await lease.fetchone()
    if row is None or not row[0]:
        raise LeaseLost()
    return claim


async def _claim_queued(conn: psycopg.AsyncConnection[Any], request: _Request) -> Claim | None:
    """Claim from the jobs table, as the agent's view of it ranks it."""
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
            _held(*record, group_id=group_id, request=request) for record in await cursor.fetchall()
        ]
        if not jobs:
            view.exhausted(key)
            continue
        if len(jobs) < size:
            view.exhausted(key)
        return await _assign(conn, slot, unit.org_id, key, jobs)
    running.pop(slot.device_id, None)
    return None


async def _claim_fresh(
    conn: psycopg.AsyncConnection[Any], request: _Request, fresh: FreshJobs
) -> Claim | None:
    """Claim from the jobs grouped since the agent last read the ledger (runner/fresh.py)."""
    slot, view = request.slot, request.view
    units = fresh.units(slot.target, running=request.running, slot=slot.device_id)
    for unit in rank_groups(units, installed=request.installed, policy=request.policy)[
        :_UNITS_TRIED
    ]:
        key = _unit_key(unit)
        if unit.org_id in view.limited_orgs and not await _org_has_room(conn, unit.org_id):
            continue
        size = batch_size(
            unit,
            target_slots=view.target_slots,
            installed=request.installed,
            policy=request.policy,
        )
        request.running[slot.device_id] = key
        jobs = [_fresh_held(job, request) for job in fresh.take(key, size)]
        return await _assign(conn, slot, unit.org_id, key, jobs)
    return None


async def _assign(
    conn: psycopg.AsyncConnection[Any],
    slot: SlotIdentity,
    org_id: str,
    unit: UnitKey,
    jobs: list[HeldJob],
) -> Claim:
    """Append the jobs' JobAssigned, all or nothing, and record the slot's occupancy."""
    group_id, app_version_id = unit
    writes = [
        StreamWrite(
            stream_id=job.job_id,
            expected_version=job.version,
            events=[_assigned(job.attempt, slot)],
            metadata=Metadata(org_id=job.org_id, actor=f"runner:{slot.agent_id}"),
        )
        for job in jobs
    ]
    await append_many(conn, writes)
    await conn.execute(
        QUERIES["occupy"],
        {
            "device_id": slot.device_id,
            "agent_id": slot.agent_id,
            "org_id": org_id,
            "target": slot.target,
            "group_id": group_id,
            "app_version_id": app_version_id,
            "job_ids": [job.job_id for job in jobs],
        },
    )
    for job in jobs:
        job.version += 1
    return Claim(group_id=group_id, app_version_id=app_version_id, org_id=org_id, jobs=tuple(jobs))


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


def _fresh_held(job: FreshJob, request: _Request) -> HeldJob:
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
        request=request,
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
    request: _Request,
) -> HeldJob:
    """A claimed job, from the columns lock_jobs selects (or the same facts of a fresh one)."""
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
        timeout_s=timeout_s or request.default_timeout_s,
        max_attempts=max_attempts,
        state=decide(before, _assigned(attempts + 1, request.slot)),
        version=version,
    )


def _assigned(attempt: int, slot: SlotIdentity) -> JobAssigned:
    return JobAssigned(attempt=attempt, device_id=slot.device_id, agent_id=slot.agent_id)
