"""Standing claims with real agents: a submit gives its job to an idle slot, and a slot
that never heard of the batch it was given hands it back (runner/standing.py)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import psycopg
import pytest

from ledger.events import JobRetryScheduled, JobSubmitted, Target
from runner import run_agent
from runner.claim import LeaseLost
from tests.support.api import api_client, job_body
from tests.support.runner import (
    PASSED_AT_ONCE,
    agent_config,
    assigned_by_submit,
    histories,
    pipeline,
    submit_as_api,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio

#: A job a submit gave to a slot that never heard of it, and so handed it back.
GIVEN_AND_HANDED_BACK = ["JobSubmitted", "JobGrouped", "JobAssigned", "JobRetryScheduled"]

JOB = JobSubmitted(
    org_id="acme", app_version_id="app-1", test_path="t.spec.js", target=Target.EMULATOR
)


async def standing_slots(url: str, count: int) -> None:
    """Wait until *count* slots stand idle."""

    async def standing() -> bool:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            row = await (await conn.execute("select count(*) from standing_claims")).fetchone()
        return row is not None and row[0] == count

    await async_wait_until(standing, what=f"{count} standing slots")


async def test_a_job_submitted_to_an_idle_agent_is_assigned_by_its_submit(db_url: str) -> None:
    async with (
        pipeline(db_url, agent_config("idle", "emulator:2")),
        api_client(db_url) as client,
    ):
        await standing_slots(db_url, 2)
        response = await client.post("/jobs", json=job_body(target="emulator"))
        job_id = UUID(response.json()["job_id"])
        await wait_all_ended(db_url, [job_id])
        await standing_slots(db_url, 2)  # the slot that ran it stands again

    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == PASSED_AT_ONCE
    assert await assigned_by_submit(db_url, [job_id]) == {job_id}


async def submit_unheard(url: str, job: JobSubmitted) -> UUID:
    """Submit *job* as the API does while every listening connection is gone, so that no
    agent hears of it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and query like 'listen %'"
        )

        async def deaf() -> bool:
            cursor = await conn.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and query like 'listen %'"
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 0

        await async_wait_until(deaf, what="the listening connections to end")
        return await submit_as_api(conn, job)


async def test_a_slot_that_never_heard_of_its_batch_hands_it_back(db_url: str) -> None:
    """The notification is lost: the slot finds its standing claim gone when it polls,
    hands the batch back (uncounted) and runs the job as any other."""
    async with pipeline(db_url, agent_config("deaf", "emulator:1")):
        await standing_slots(db_url, 1)
        job_id = await submit_unheard(db_url, JOB)
        await wait_all_ended(db_url, [job_id])

    assert await assigned_by_submit(db_url, [job_id]) == {job_id}
    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == [*GIVEN_AND_HANDED_BACK, *PASSED_AT_ONCE[2:]]
    handed_back = stream[3].event
    assert isinstance(handed_back, JobRetryScheduled) and handed_back.handed_back


async def test_an_agent_stopping_hands_back_a_batch_it_never_heard_of(db_url: str) -> None:
    """Its slot would only find out at its next poll, which is far off: stopping, it
    withdraws its standing claim, finds the batch in its place, and hands it back."""
    config = agent_config("stopping", "emulator:1", poll_interval_s=30.0)
    async with pipeline(db_url, config):
        await standing_slots(db_url, 1)
        job_id = await submit_unheard(db_url, JOB)

    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == GIVEN_AND_HANDED_BACK
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for table in ("standing_claims", "slot_occupancy"):
            row = await (await conn.execute(f"select count(*) from {table}")).fetchone()
            assert row == (0,), f"{table} still has rows"


async def test_a_new_process_of_an_agent_takes_over_its_standing_claims(db_url: str) -> None:
    """The old process stood idle on the device; the new one, superseding it, stands in
    its place, and the next submit goes to the new one."""
    old = agent_config("box", "emulator:1", lease_ttl_s=60.0)
    new = agent_config("box", "emulator:1")
    async with pipeline(db_url) as running, api_client(db_url) as client:
        old_task = asyncio.create_task(run_agent(db_url, old, running.stop))
        await standing_slots(db_url, 1)
        running.add_agent(new)
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(old_task, 10)

        async def new_stands() -> bool:
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                cursor = await conn.execute(
                    "select count(*) from standing_claims join agent_leases using (agent_id)"
                    " where expires_at > now()"
                )
                row = await cursor.fetchone()
            return row == (1,)

        await async_wait_until(new_stands, what="the new process to stand")
        response = await client.post("/jobs", json=job_body(target="emulator"))
        job_id = UUID(response.json()["job_id"])
        await wait_all_ended(db_url, [job_id])

    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == PASSED_AT_ONCE
    assert await assigned_by_submit(db_url, [job_id]) == {job_id}
