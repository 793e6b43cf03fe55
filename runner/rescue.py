"""The rescuer: any agent hands on the jobs of agents whose lease lapsed.

A lapsed agent's busy slots (slot_occupancy) list every job attempt it may still hold.
For each attempt still on that agent, the rescuer appends JobLeaseExpired — the attempt
counts — and a JobRetryScheduled with backoff while the job's infrastructure attempts
last; the job is then queued again for any slot. Both go at the version the rescuer
read, so a result the lapsed agent appends later loses: it is fenced off. The lease
row is locked while this happens (other rescuers skip it), and the agent's occupancy
and lease are deleted in the same transaction as its jobs' events.

A live slot that lost its connection uses the same record on reconnecting: a claim of
its may have committed without it hearing back, and those jobs are handed back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
from typing import Any
from uuid import UUID

import psycopg

from ledger.decisions import JobStatus, decide, fold
from ledger.errors import ConcurrencyConflict
from ledger.events import (
    Event,
    JobAssigned,
    JobLeaseExpired,
    JobRetryScheduled,
    JobSubmitted,
    Metadata,
)
from ledger.store import append, read_stream
from runner._sql import QUERIES
from runner.config import RetryPolicy
from runner.jobs import backoff_s

__all__ = ["hand_back_unknown", "rescue_lapsed_agents"]

_log = logging.getLogger(__name__)
_ON_DEVICE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})
_RETRIES = 5


async def rescue_lapsed_agents(
    conn: psycopg.AsyncConnection[Any], *, actor: str, retry: RetryPolicy, rng: random.Random
) -> int:
    """Hand on the jobs of every lapsed agent no other rescuer is busy with; return how many.

    *conn* must be in autocommit mode.
    """
    rescued = 0
    async with conn.transaction():
        cursor = await conn.execute(QUERIES["lapsed_leases"])
        for (agent_id,) in await cursor.fetchall():
            params = {"agent_id": agent_id}
            occupancy = await (await conn.execute(QUERIES["occupancy_of_agent"], params)).fetchall()
            for _device_id, job_ids in occupancy:
                for job_id in job_ids:
                    rescued += await _rescue(conn, job_id, agent_id, actor, retry, rng)
            await conn.execute(QUERIES["release_agent_occupancy"], params)
            await conn.execute(QUERIES["release_lease"], params)
            _log.warning("agent %s let its lease lapse; its jobs were handed on", agent_id)
    return rescued


async def _rescue(
    conn: psycopg.AsyncConnection[Any],
    job_id: UUID,
    agent_id: str,
    actor: str,
    retry: RetryPolicy,
    rng: random.Random,
) -> int:
    for _ in range(_RETRIES):
        history = await read_stream(conn, job_id)
        state = fold(entry.event for entry in history)
        assigned = [e.event for e in history if isinstance(e.event, JobAssigned)]
        if state.status not in _ON_DEVICE or not assigned or assigned[-1].agent_id != agent_id:
            return 0
        submitted = history[0].event
        assert isinstance(submitted, JobSubmitted)
        handed_back = sum(
            1 for e in history if isinstance(e.event, JobRetryScheduled) and e.event.handed_back
        )
        counted = state.attempt - handed_back
        events: list[Event] = [JobLeaseExpired(attempt=state.attempt, agent_id=agent_id)]
        if counted < max(submitted.max_attempts, retry.infra_attempts):
            delay = dt.timedelta(seconds=backoff_s(counted, retry, rng))
            events.append(
                JobRetryScheduled(
                    attempt=state.attempt,
                    not_before=dt.datetime.now(dt.UTC) + delay,
                    reason=f"agent {agent_id} stopped renewing its lease",
                )
            )
        for event in events:
            state = decide(state, event)
        metadata = Metadata(org_id=submitted.org_id, actor=actor)
        try:
            async with conn.transaction():
                await append(conn, job_id, len(history), events, metadata)
        except ConcurrencyConflict:
            continue
        return 1
    return 0


async def hand_back_unknown(
    conn: psycopg.AsyncConnection[Any], device_id: UUID, agent_id: str, actor: str
) -> int:
    """Hand back the jobs of a batch the slot claimed without knowing it; return how many.

    That happens when a claim's commit succeeded but its connection broke before the
    reply: the slot's occupancy row then lists jobs the agent holds and never ran.
    """
    cursor = await conn.execute(
        QUERIES["occupancy_of_slot"], {"device_id": device_id, "agent_id": agent_id}
    )
    row = await cursor.fetchone()
    handed = 0
    for job_id in row[0] if row else []:
        history = await read_stream(conn, job_id)
        state = fold(entry.event for entry in history)
        assigned = [e.event for e in history if isinstance(e.event, JobAssigned)]
        if state.status not in _ON_DEVICE or assigned[-1].agent_id != agent_id:
            continue
        submitted = history[0].event
        assert isinstance(submitted, JobSubmitted)
        event = JobRetryScheduled(
            attempt=state.attempt,
            not_before=dt.datetime.now(dt.UTC),
            reason="handed back: the runner lost track of it",
            handed_back=True,
        )
        decide(state, event)
        metadata = Metadata(org_id=submitted.org_id, actor=actor)
        with contextlib.suppress(ConcurrencyConflict):
            await append(conn, job_id, state.version, [event], metadata)
            handed += 1
    return handed
