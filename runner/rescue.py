"""The rescuer: any agent hands on the jobs of agents that died or whose lease lapsed.

An agent whose database connection is gone is dead: its life lock is free
(migrations/042_agent_life_locks.sql), and the rescuer ends its lease at once. One agent
of the fleet does this per maintenance interval (runner/agent.py takes turns), and
never two at once, so that a large fleet does not try every lock many times a second.

open_jobs lists every attempt a lapsed agent still holds. For each, the rescuer appends
JobLeaseExpired — the attempt counts — and a JobRetryScheduled with backoff while the
job's infrastructure attempts last; the job is then claimable again by any slot. Both go
at the version the row shows, so a result the lapsed agent appends later loses: it is
fenced off. The lease row is locked while this happens (other rescuers skip it, and a
claim of the agent's still committing holds it off), and the lease is deleted in the
same transaction as its jobs' events.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

import psycopg

from ledger.decisions import JobState, JobStatus, decide
from ledger.events import Event, JobLeaseExpired, JobRetryScheduled, Metadata
from ledger.store import StreamWrite, append_many
from runner._sql import QUERIES
from runner.config import RetryPolicy
from runner.jobs import backoff_s, runner_actor

__all__ = ["rescue_lapsed_agents"]

_log = logging.getLogger(__name__)


async def rescue_lapsed_agents(
    conn: psycopg.AsyncConnection[Any],
    *,
    rescuer: str,
    retry: RetryPolicy,
    rng: random.Random,
) -> int:
    """Hand on the jobs of every dead or lapsed agent; return how many. *rescuer* is the
    agent id of the one asking. *conn* must be in autocommit mode.
    """
    actor = runner_actor(rescuer)
    rescued = 0
    async with conn.transaction():
        if not await _flag(conn, "one_rescuer"):
            return 0
        params = {"agent_id": rescuer}
        dead = await (await conn.execute(QUERIES["end_dead_leases"], params)).fetchall()
        for agent_id, _unlocked in dead:
            _log.warning("agent %s is gone (its connection closed)", agent_id)
        cursor = await conn.execute(QUERIES["lapsed_leases"])
        for (agent_id,) in await cursor.fetchall():
            params = {"agent_id": agent_id}
            held = await (await conn.execute(QUERIES["jobs_of_agent"], params)).fetchall()
            writes = [_rescue(row, agent_id, actor, retry, rng) for row in held]
            # The rows are locked by the append (append_events_v2) and were read under
            # the lease's lock: no claim or result of the agent's can move them meanwhile.
            await append_many(conn, writes)
            await conn.execute(QUERIES["release_lease"], params)
            rescued += len(writes)
            _log.warning(
                "agent %s let its lease lapse; its %d job(s) were handed on", agent_id, len(writes)
            )
    return rescued


async def _flag(conn: psycopg.AsyncConnection[Any], query: str) -> bool:
    row = await (await conn.execute(QUERIES[query])).fetchone()
    return bool(row and row[0])


def _rescue(
    row: tuple[Any, ...], agent_id: str, actor: str, retry: RetryPolicy, rng: random.Random
) -> StreamWrite:
    job_id, version, attempt, handed_back, max_attempts, org_id, status = row
    state = JobState(
        version=version, status=JobStatus(status), attempt=attempt, max_attempts=max_attempts
    )
    counted = attempt - handed_back
    events: list[Event] = [JobLeaseExpired(attempt=attempt, agent_id=agent_id)]
    if counted < max(max_attempts, retry.infra_attempts):
        delay = dt.timedelta(seconds=backoff_s(counted, retry, rng))
        events.append(
            JobRetryScheduled(
                attempt=attempt,
                not_before=dt.datetime.now(dt.UTC) + delay,
                reason=f"agent {agent_id} stopped renewing its lease",
            )
        )
    for event in events:
        state = decide(state, event)
    return StreamWrite(
        stream_id=job_id,
        expected_version=version,
        events=events,
        metadata=Metadata(org_id=org_id, actor=actor),
    )
