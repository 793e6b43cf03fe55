"""Claiming a batch: one short transaction that picks a group and assigns its jobs.

In one transaction the slot withdraws its standing claim (runner/standing.py), ends its
previous batch's occupancy, chooses the best unit of work for itself and that unit's
best jobs (runner/choose.py: the org's row is locked and its busy slots counted when it
has a parallel limit, the jobs' rows locked SKIP LOCKED), then appends a JobAssigned to
each at the version it was chosen at, all or nothing, and records the slot's occupancy,
in one statement (claim_jobs). The append is the arbiter: if any job moved on
meanwhile, the whole claim rolls back and is tried again, so exactly one slot owns an
attempt.

The claim's commit does not wait for its WAL flush: the device starts the batch about a
millisecond sooner, and durability comes with the batch's first append (JobStarted),
whose synchronous commit flushes the WAL before it, the claim's included. Should the
server crash before that, the claim is gone with it: the job is unassigned again, and
the agent's appends for it, made at versions past the claim, are refused as conflicts,
so the job is dropped here and claimed anew, still by exactly one slot.

An idle slot is offered the jobs grouped since the agent last read the ledger
(runner/fresh.py) first, before the projector has put them in the jobs table: a slot
that found the table empty a moment ago has nothing older to prefer. When the best of
them belong to an org without a parallel limit, there is nothing to choose in the
database, and the claim is that one statement alone: one round trip from idle to
assigned.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

import attrs
import psycopg
from psycopg import errors as pg_errors

from ledger.errors import ConcurrencyConflict, QgjobError
from ledger.events import Metadata
from ledger.store import StreamWrite, append_arguments, execute_appending
from runner._sql import QUERIES
from runner.choose import Chosen, assignment, choose_fresh, choose_fresh_unlimited, choose_queued
from runner.fresh import FreshJobs
from runner.jobs import HeldJob
from runner.policy import ClaimPolicy
from runner.queue_view import QueueView, UnitKey

__all__ = [
    "BatchGiven",
    "Claim",
    "ClaimRequest",
    "LeaseLost",
    "SlotIdentity",
    "check_opened",
    "claim_batch",
]

_log = logging.getLogger(__name__)
_RETRIES = 5


class LeaseLost(QgjobError):
    """This agent's lease lapsed; its jobs are being handed to other agents."""


class BatchGiven(QgjobError):
    """The slot holds a batch it did not claim itself: a submit gave it one for its
    standing claim (runner/standing.py), or a claim of its committed unbeknown to it."""


def check_opened(opened: str) -> None:
    """Raise what begin_claim's answer (migrations/035_standing_claims.sql) means."""
    if opened == "lease_lost":
        raise LeaseLost()
    if opened == "given":
        raise BatchGiven()


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
    fresh_first: bool = False,
    last_batch: Sequence[UUID] = (),
) -> Claim | None:
    """Claim the best batch for *slot*, or None when nothing is runnable for it now.

    *view* is the agent's picture of the queue for the slot's target; *running* is what
    each busy slot of the agent runs, by device id. The unit a claim goes for is entered
    in *running* before the claim waits on the database, so that the agent's other
    slots, ranking meanwhile, count it as taken; it stays there when the claim succeeds.
    *fresh* holds jobs too new for the view: tried after the view's, or before them when
    *fresh_first* (for an idle slot, which found the view empty a moment ago).
    *last_batch*: the jobs of the slot's last batch, which the claim ends; it also
    withdraws the slot's standing claim. *conn* must be in autocommit mode. Raises
    LeaseLost when the agent's lease lapsed, BatchGiven when the slot holds a batch it
    does not know of.
    """
    request = ClaimRequest(
        slot=slot,
        view=view,
        running=running,
        installed=installed,
        policy=policy,
        default_timeout_s=default_timeout_s,
        last_batch=list(last_batch),
    )
    for _ in range(_RETRIES):
        try:
            if fresh_first and fresh is not None:
                chosen = choose_fresh_unlimited(request, fresh)
                if chosen is not None:
                    return await _assign(conn, request, chosen)
            async with conn.transaction():
                claim = await _claim(conn, request, fresh, fresh_first=fresh_first)
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
class ClaimRequest:
    """One slot's claim: who asks, what its agent sees, and how it ranks (runner/choose.py)."""

    slot: SlotIdentity
    view: QueueView
    running: dict[UUID, UnitKey]
    installed: Collection[str]
    policy: ClaimPolicy
    default_timeout_s: float
    #: The jobs of the slot's last batch, whose occupancy the claim ends.
    last_batch: list[UUID]


async def _claim(
    conn: psycopg.AsyncConnection[Any],
    request: ClaimRequest,
    fresh: FreshJobs | None,
    *,
    fresh_first: bool,
) -> Claim | None:
    slot = request.slot
    ids = {"device_id": slot.device_id, "agent_id": slot.agent_id, "last_batch": request.last_batch}
    row = await (await conn.execute(QUERIES["begin_claim"], ids)).fetchone()
    assert row is not None
    check_opened(row[0])

    async def from_fresh() -> Chosen | None:
        return None if fresh is None else await choose_fresh(conn, request, fresh)

    async def from_table() -> Chosen | None:
        return await choose_queued(conn, request)

    for choose in (from_fresh, from_table) if fresh_first else (from_table, from_fresh):
        chosen = await choose()
        if chosen is not None:
            return await _assign(conn, request, chosen)
    return None


async def _assign(
    conn: psycopg.AsyncConnection[Any], request: ClaimRequest, chosen: Chosen
) -> Claim:
    """Append the jobs' JobAssigned, all or nothing, and record the slot's occupancy: one
    statement (claim_jobs, migrations/035_standing_claims.sql). Raises LeaseLost or
    BatchGiven."""
    slot = request.slot
    (group_id, app_version_id), org_id, jobs = chosen.unit, chosen.org_id, chosen.jobs
    writes = [
        StreamWrite(
            stream_id=job.job_id,
            expected_version=job.version,
            events=[assignment(job.attempt, slot)],
            metadata=Metadata(org_id=job.org_id, actor=f"runner:{slot.agent_id}"),
        )
        for job in jobs
    ]
    cursor = await execute_appending(
        conn,
        QUERIES["claim_jobs"],
        {
            "device_id": slot.device_id,
            "agent_id": slot.agent_id,
            "target": slot.target,
            "last_batch": request.last_batch,
            "org_id": org_id,
            "group_id": group_id,
            "app_version_id": app_version_id,
            **append_arguments(writes),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    check_opened(row[0])
    for job in jobs:
        job.version += 1
    return Claim(group_id=group_id, app_version_id=app_version_id, org_id=org_id, jobs=tuple(jobs))
