"""Idle slots start jobs grouped at submit straight from the ledger, ahead of the projector."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from uuid import UUID

import psycopg
import pytest

from ledger.events import JobSubmitted, Target
from runner.agent import Agent
from tests.support.api import api_client, job_body
from tests.support.runner import (
    PASSED_AT_ONCE,
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit_grouped,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def agent_alone(url: str) -> AsyncIterator[Agent]:
    """One agent with one emulator slot, and no projector anywhere; stopped on the way out."""
    agent = Agent(url, agent_config("fresh", "emulator:1"))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))

    async def started() -> bool:
        # Its slots exist once it follows the ledger: a job submitted now is fresh to it.
        return bool(agent.slots)

    try:
        await async_wait_until(started, what="the agent to start")
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _projected_jobs(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("select count(*) from jobs")).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_idle_agent_runs_a_submitted_job_that_no_projector_has_seen(
    db_url: str,
) -> None:
    async with agent_alone(db_url), api_client(db_url) as client:
        response = await client.post("/jobs", json=job_body(target="emulator"))
        job_id = UUID(response.json()["job_id"])
        await wait_all_ended(db_url, [job_id])
    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == PASSED_AT_ONCE
    assert await _projected_jobs(db_url) == 0, "a projector ran after all"


async def test_a_suite_too_large_to_announce_is_read_from_the_ledger_and_run(
    db_url: str,
) -> None:
    """A submit's notification carries its jobs only while they fit in one (8 kB); past
    that the agent is told to look, and reads them from the ledger itself."""
    suite = {key: value for key, value in job_body(target="emulator").items() if key != "test_path"}
    suite["tests"] = [f"tests/checkout/step-{n:03d}.spec.js" for n in range(60)]
    async with agent_alone(db_url), api_client(db_url) as client:
        response = await client.post("/jobs", json=suite)
        job_ids = [UUID(job["job_id"]) for job in response.json()["jobs"]]
        await wait_all_ended(db_url, job_ids)
    streams = await histories(db_url, job_ids)
    assert {tuple(recorded.type for recorded in stream) for stream in streams.values()} == {
        tuple(PASSED_AT_ONCE)
    }
    assert await _projected_jobs(db_url) == 0, "a projector ran after all"


async def test_a_notification_that_is_no_announcement_sends_the_agent_to_the_ledger(
    db_url: str,
) -> None:
    job = JobSubmitted(
        org_id="acme", app_version_id="app-1", test_path="t.spec.js", target=Target.EMULATOR
    )
    async with agent_alone(db_url):
        (job_id,), _ = await submit_grouped(db_url, [job], payload="not an announcement")
        await wait_all_ended(db_url, [job_id])
    (stream,) = (await histories(db_url, [job_id])).values()
    assert [recorded.type for recorded in stream] == PASSED_AT_ONCE


async def test_a_job_for_another_target_is_not_taken_fresh(db_url: str) -> None:
    async with agent_alone(db_url), api_client(db_url) as client:
        on_device = await client.post("/jobs", json=job_body(target="device"))
        on_emulator = await client.post("/jobs", json=job_body(target="emulator"))
        await wait_all_ended(db_url, [UUID(on_emulator.json()["job_id"])])
        device_job = UUID(on_device.json()["job_id"])
        (stream,) = (await histories(db_url, [device_job])).values()
    assert [recorded.type for recorded in stream] == ["JobSubmitted", "JobGrouped"]


async def test_agents_racing_for_fresh_jobs_assign_each_attempt_once(db_url: str) -> None:
    configs = [agent_config(f"racer-{n}", "emulator:2") for n in range(3)]
    async with pipeline(db_url, *configs), api_client(db_url) as client:

        async def submit(index: int) -> UUID:
            body = job_body(
                target="emulator", app_version_id=f"app-{index % 3}", test_path=f"t{index}.js"
            )
            response = await client.post("/jobs", json=body)
            return UUID(response.json()["job_id"])

        job_ids = list(await asyncio.gather(*(submit(index) for index in range(60))))
        await wait_all_ended(db_url, job_ids)
    streams = await histories(db_url, job_ids)
    states = check_histories(streams)
    assert {state.status.value for state in states.values() if state.status} == {"passed"}
    assigned = Counter(
        recorded.stream_id
        for stream in streams.values()
        for recorded in stream
        if recorded.type == "JobAssigned"
    )
    assert set(assigned.values()) == {1}
