"""Leases: an agent whose lease lapsed is fenced off, and its jobs are run by another."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from ledger.decisions import JobStatus
from ledger.events import JobAssigned, JobLeaseExpired, JobPassed, JobRetryScheduled
from runner import LeaseLost, run_agent
from tests.support.factories import submitted
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_an_agent_whose_lease_lapsed_is_fenced_then_registers_again(
    db_url: str,
) -> None:
    """While the agent runs a batch its lease is made to lapse: nothing its old identity
    ran afterwards counts, it comes back under a new identity, and every job passes."""
    zombie = agent_config("zombie", "device:1", simulated={"test_s": 0.3})
    async with (
        pipeline(db_url, zombie),
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        ids = await submit(db_url, [submitted(test_path=f"tests/t{i}.spec.ts") for i in range(3)])

        async def zombie_running() -> bool:
            cursor = await conn.execute(
                "select count(*) from events where type = 'JobStarted' "
                "and metadata ->> 'actor' like 'runner:zombie:%%'"
            )
            row = await cursor.fetchone()
            return row is not None and row[0] > 0

        await async_wait_until(zombie_running, what="the zombie to start a test")
        cursor = await conn.execute(
            "update agent_leases set expires_at = now() where name = 'zombie' "
            "returning agent_id, now()"
        )
        [(old_id, lapsed_at)] = await cursor.fetchall()

        async def registered_again() -> bool:
            cursor = await conn.execute(
                "select count(*) from agent_leases where name = 'zombie' "
                "and agent_id <> %s and expires_at > now()",
                (old_id,),
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 1

        await async_wait_until(registered_again, what="the zombie to register again")
        await wait_all_ended(db_url, ids)

    streams = await histories(db_url, ids)
    states = check_histories(streams)
    assert all(state.status == JobStatus.PASSED for state in states.values())
    for stream in streams.values():
        late_passes = [
            r for r in stream if isinstance(r.event, JobPassed) and r.recorded_at > lapsed_at
        ]
        assert all(r.metadata.actor != f"runner:{old_id}" for r in late_passes), (
            "a result recorded after the lease lapsed came from the fenced identity"
        )
        old_attempts = [
            r.event.attempt
            for r in stream
            if isinstance(r.event, JobAssigned) and r.event.agent_id == old_id
        ]
        passed_by_old = any(
            isinstance(r.event, JobPassed) and r.metadata.actor == f"runner:{old_id}"
            for r in stream
        )
        for attempt in old_attempts:
            if passed_by_old:
                continue
            # Each attempt the old identity held ended without a verdict: expired or handed
            # back.
            assert any(
                (isinstance(r.event, JobLeaseExpired) and r.event.attempt == attempt)
                or (isinstance(r.event, JobRetryScheduled) and r.event.handed_back)
                for r in stream
            )


async def test_a_new_process_of_an_agent_supersedes_the_old_one_and_takes_over(
    db_url: str,
) -> None:
    """An agent restarted under the same name while its old process still runs: the
    old one is declared dead at once (no waiting for its lease to lapse), stops, and
    the new one runs its jobs on the same devices."""
    old = agent_config("box", "device:1", simulated={"test_s": 0.3}, lease_ttl_s=60.0)
    new = agent_config("box", "device:1")
    async with (
        pipeline(db_url) as running,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        old_task = asyncio.create_task(run_agent(db_url, old, running.stop))
        ids = await submit(db_url, [submitted(test_path=f"tests/t{i}.spec.ts") for i in range(3)])

        async def old_running() -> bool:
            cursor = await conn.execute("select count(*) from events where type = 'JobStarted'")
            row = await cursor.fetchone()
            return row is not None and row[0] > 0

        await async_wait_until(old_running, what="the old process to start a test")
        running.add_agent(new)
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(old_task, 10)
        await wait_all_ended(db_url, ids)

    streams = await histories(db_url, ids)
    states = check_histories(streams)
    assert all(state.status == JobStatus.PASSED for state in states.values())
    assigned = [r.event for s in streams.values() for r in s if isinstance(r.event, JobAssigned)]
    assert len({event.device_id for event in assigned}) == 1, "both run the same device"
