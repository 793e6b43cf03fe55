"""Ageing on real slots: a low-priority job is not starved by a stream of urgent ones."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from ledger.events import JobSubmitted, Target
from runner import ClaimPolicy
from runner.policy import ageing_bound_s
from tests.support.runner import agent_config, pipeline, submit
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

POLICY = ClaimPolicy(ageing_per_s=10.0, affinity_margin=2.0, join_cost=1.0, max_batch=2)
TEST_S = 0.05
#: Urgent jobs kept waiting at all times, so that without ageing the low job would starve.
BACKLOG = 3


def job(i: int, *, priority: int, app: str) -> JobSubmitted:
    return JobSubmitted(
        org_id="acme",
        app_version_id=app,
        test_path=f"tests/{app}-{i}.spec.ts",
        target=Target.EMULATOR,
        priority=priority,
    )


async def _scalar(conn: psycopg.AsyncConnection[Any], query: str, *args: object) -> object:
    row = await (await conn.execute(query, args)).fetchone()
    return None if row is None else row[0]


async def test_a_low_priority_job_starts_within_the_ageing_bound(db_url: str) -> None:
    """Behind an endless backlog of priority-10 jobs on one slot, a priority-1 job waits
    about as long as ClaimPolicy's ageing bound, then runs."""
    config = agent_config(
        "ageing", "emulator:1", policy=POLICY, simulated={"install_s": 0.0, "test_s": TEST_S}
    )
    bound = ageing_bound_s(1, POLICY)
    async with (
        pipeline(db_url, config),
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        await submit(db_url, [job(i, priority=10, app="urgent") for i in range(BACKLOG)])
        [low] = await submit(db_url, [job(0, priority=1, app="patient")])
        fed = BACKLOG

        async def low_started() -> bool:
            nonlocal fed
            waiting = await _scalar(
                conn,
                "select count(*) from jobs where app_version_id = 'urgent' "
                "and status in ('submitted', 'grouped')",
            )
            assert isinstance(waiting, int)
            if waiting < BACKLOG:
                more = [job(fed + i, priority=10, app="urgent") for i in range(BACKLOG - waiting)]
                await submit(db_url, more)
                fed += len(more)
            started = await _scalar(
                conn, "select 1 from events where stream_id = %s and type = 'JobStarted'", low
            )
            return started is not None

        await async_wait_until(low_started, timeout=bound + 10, what="the low job to start")
        await asyncio.sleep(0)

        waited = await _scalar(
            conn,
            "select extract(epoch from max(recorded_at) filter (where type = 'JobStarted') "
            "  - min(recorded_at)) from events where stream_id = %s",
            low,
        )
        overtook = await _scalar(
            conn,
            "select count(*) from events s join events u on u.stream_id = s.stream_id "
            "where s.type = 'JobSubmitted' and s.data ->> 'app_version_id' = 'urgent' "
            "and u.type = 'JobStarted' and s.recorded_at > "
            "  (select recorded_at from events where stream_id = %s and version = 1) "
            "and u.recorded_at < "
            "  (select recorded_at from events where stream_id = %s and type = 'JobStarted')",
            low,
            low,
        )
    assert isinstance(overtook, int) and overtook > 10, "the urgent jobs did overtake at first"
    # The bound, plus the urgent backlog's own wait and one batch in flight.
    assert float(str(waited)) <= bound + BACKLOG * TEST_S + POLICY.max_batch * TEST_S + 0.5
