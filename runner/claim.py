"""Claiming a batch: one transaction that takes a slot's best jobs from open_jobs.

docs/claiming.md follows a job from submit to device; this is the claim step. In one
transaction the slot:

1. checks that its agent still holds its lease, and locks the lease row so that no
   rescuer hands the agent's jobs on until the claim has committed;
2. takes up the jobs already assigned to it that it never started, if there are any: a
   claim of its that committed while its connection broke;
3. otherwise reads what waits for it in open_jobs (only jobs whose needs its
   capabilities meet), ranks the claim units with runner/policy.py and, for the best
   unit that no other claim is choosing from right now and whose org has a free slot,
   locks up to a batch of its jobs, skipping rows other claims have locked;
4. appends each job's JobAssigned at the version it locked, all or nothing.

The row locks keep two claims off one job; the append's expected versions decide should
anything else have moved a job on. A claim that loses a race (a cancel, a deadlock
between two claims of limited orgs) rolls back whole and looks again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
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
from runner.jobs import HeldJob, runner_actor
from runner.policy import ClaimPolicy, QueuedGroup, batch_size, rank_groups

__all__ = ["Claim", "LeaseLost", "SlotIdentity", "claim_batch"]

_log = logging.getLogger(__name__)
_RETRIES = 5
#: Claim units tried per claim; more are rarely worth it (other slots take them meanwhile).
_UNITS_TRIED = 8


class LeaseLost(QgjobError):
    """This agent's lease lapsed; its jobs are being handed to other agents."""


@attrs.frozen(kw_only=True)
class SlotIdentity:
    """Which slot claims, and what it offers a job."""

    device_id: UUID
    agent_id: str
    target: str
    platform: str | None = None
    device: str | None = None
    os_version: str | None = None


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
    installed: Collection[str],
    policy: ClaimPolicy,
    default_timeout_s: float,
) -> Claim | None:
    """Claim the best batch for *slot*, or None when nothing is runnable for it now.

    *installed* are the app versions on the slot's device. *conn* must be in autocommit
    mode. Raises LeaseLost when the agent's lease has lapsed.
    """
    for _ in range(_RETRIES):
        try:
            async with conn.transaction():
                return await _claim(conn, slot, installed, policy, default_timeout_s)
        except (ConcurrencyConflict, pg_errors.DeadlockDetected) as error:
            _log.debug("claim for %s lost a race (%s); retrying", slot.device_id, error)
    return None


async def _claim(
    conn: psycopg.AsyncConnection[Any],
    slot: SlotIdentity,
    installed: Collection[str],
    policy: ClaimPolicy,
    default_timeout_s: float,
) -> Claim | None:
    if not await _fetch_flag(conn, "hold_lease", {"agent_id": slot.agent_id}):
        raise LeaseLost()
    ids = {"device_id": slot.device_id, "agent_id": slot.agent_id}
    held = await (await conn.execute(QUERIES["held_by_slot"], ids)).fetchall()
    if held:
        return _batch(held, slot, default_timeout_s, status=JobStatus.ASSIGNED)
    rows = await _choose(conn, slot, installed, policy)
    if not rows:
        return None
    claim = _batch(rows, slot, default_timeout_s, status=None)
    await append_many(
        conn,
        [
            StreamWrite(
                stream_id=job.job_id,
                expected_version=job.version,
                events=[_assignment(job.attempt, slot)],
                metadata=Metadata(org_id=job.org_id, actor=runner_actor(slot.agent_id)),
            )
            for job in claim.jobs
        ],
    )
    for job in claim.jobs:
        job.version += 1
    return claim


async def _choose(
    conn: psycopg.AsyncConnection[Any],
    slot: SlotIdentity,
    installed: Collection[str],
    policy: ClaimPolicy,
) -> list[tuple[Any, ...]]:
    """The best unit's jobs for the slot, locked; empty when none is runnable."""
    capabilities = {
        "target": slot.target,
        "platform": slot.platform,
        "device": slot.device,
        "os_version": slot.os_version,
    }
    cursor = await conn.execute(
        QUERIES["queue_summary"], {**capabilities, "device_id": slot.device_id}
    )
    units, limited, target_slots = _units(await cursor.fetchall())
    full_orgs: set[str] = set()
    for unit in rank_groups(units, installed=installed, policy=policy)[:_UNITS_TRIED]:
        if unit.org_id in full_orgs:
            continue
        group_id, app_version_id = _unit_key(unit)
        key = {"group_id": group_id, "app_version_id": app_version_id}
        if not await _fetch_flag(conn, "try_unit", key):
            continue
        if unit.org_id in limited and not await _org_has_room(conn, unit.org_id):
            full_orgs.add(unit.org_id)
            continue
        cursor = await conn.execute(
            QUERIES["lock_jobs"],
            {
                **capabilities,
                **key,
                "ageing_per_s": policy.ageing_per_s,
                "limit": batch_size(
                    unit, target_slots=target_slots, installed=installed, policy=policy
                ),
            },
        )
        rows = await cursor.fetchall()
        if rows:
            return rows
    return []


def _units(rows: Sequence[tuple[Any, ...]]) -> tuple[list[QueuedGroup], set[str], int]:
    """The claim units of queue_summary's rows (one per unit and priority), the orgs with
    a parallel limit among them, and the live slots of the target."""
    waits: defaultdict[tuple[UUID, str], list[tuple[int, float]]] = defaultdict(list)
    queued: defaultdict[tuple[UUID, str], int] = defaultdict(int)
    facts: dict[tuple[UUID, str], tuple[str, int]] = {}
    limited: set[str] = set()
    target_slots = 1
    for group_id, app_version_id, org_id, is_limited, priority, count, waited, busy, slots in rows:
        key = (group_id, app_version_id)
        waits[key].append((priority, waited))
        queued[key] += count
        facts[key] = (org_id, busy)
        if is_limited:
            limited.add(org_id)
        target_slots = max(1, slots)
    units = [
        QueuedGroup(
            group_id=key,
            org_id=facts[key][0],
            app_version_id=key[1],
            queued=queued[key],
            waits=tuple(sorted(unit_waits)),
            active_slots=facts[key][1],
        )
        for key, unit_waits in waits.items()
    ]
    return units, limited, target_slots


def _unit_key(unit: QueuedGroup) -> tuple[UUID, str]:
    key = unit.group_id
    assert isinstance(key, tuple)
    return key[0], key[1]


async def _fetch_flag(
    conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any]
) -> bool:
    row = await (await conn.execute(QUERIES[query], params)).fetchone()
    return bool(row and row[0])


async def _org_has_room(conn: psycopg.AsyncConnection[Any], org_id: str) -> bool:
    params = {"org_id": org_id}
    limit = await (await conn.execute(QUERIES["lock_org_limit"], params)).fetchone()
    if limit is None:
        return True
    count = await (await conn.execute(QUERIES["org_occupancy"], params)).fetchone()
    assert count is not None
    return bool(count[0] < limit[0])


def _assignment(attempt: int, slot: SlotIdentity) -> JobAssigned:
    return JobAssigned(attempt=attempt, device_id=slot.device_id, agent_id=slot.agent_id)


def _batch(
    rows: Sequence[tuple[Any, ...]],
    slot: SlotIdentity,
    default_timeout_s: float,
    *,
    status: JobStatus | None,
) -> Claim:
    """The claim of *rows* (lock_jobs' or held_by_slot's columns). *status* None: the jobs
    wait for their JobAssigned; ASSIGNED: they have it already (taken up again)."""
    jobs = []
    for (
        job_id,
        version,
        attempt,
        handed_back,
        max_attempts,
        test_path,
        build,
        timeout_s,
        org_id,
        _group_id,
        _app_version_id,
    ) in rows:
        if status is None:
            waiting = JobState(
                version=version,
                status=JobStatus.GROUPED if attempt == 0 else JobStatus.RETRYING,
                attempt=attempt,
                max_attempts=max_attempts,
            )
            state = decide(waiting, _assignment(attempt + 1, slot))
        else:
            state = JobState(
                version=version,
                status=status,
                attempt=attempt,
                max_attempts=max_attempts,
                device_id=slot.device_id,
            )
        jobs.append(
            HeldJob(
                job_id=job_id,
                org_id=org_id,
                test_path=test_path,
                build=build,
                timeout_s=timeout_s or default_timeout_s,
                max_attempts=max_attempts,
                handed_back=handed_back,
                state=state,
                version=version,
            )
        )
    first = rows[0]
    return Claim(group_id=first[9], app_version_id=first[10], org_id=first[8], jobs=tuple(jobs))
