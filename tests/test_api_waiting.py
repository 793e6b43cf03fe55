"""A queued job says what holds it: no device, busy devices, its org's limit, a backoff."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.events import (
    FailureKind,
    JobAssigned,
    JobFailed,
    JobRetryScheduled,
    JobStarted,
    Metadata,
)
from ledger.store import append, stream_version
from projections.projector import Projector
from tests.support.api import api_client, job_body
from tests.support.runner import agent_config, pipeline
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio


async def _submit(client: httpx.AsyncClient, app_version_id: str, **fields: Any) -> str:
    body = job_body(app_version_id=app_version_id, target="emulator", **fields)
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def _waiting(client: httpx.AsyncClient, job_id: str) -> dict[str, Any] | None:
    waiting: dict[str, Any] | None = (await client.get(f"/jobs/{job_id}")).json()["waiting"]
    return waiting


async def test_a_job_no_live_slot_can_take_says_so(db_url: str) -> None:
    async with api_client(db_url) as client:
        job_id = await _submit(client, "1.0")
        await Projector(db_url).catch_up()
        waiting = await _waiting(client, job_id)
    assert waiting == {
        "reason": "no_device",
        "message": "no live emulator slot is registered",
    }


async def test_a_retrying_job_says_until_when_it_backs_off(db_url: str) -> None:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with api_client(db_url) as client:
        job_id = await _submit(client, "1.0", max_attempts=2)
        stream = uuid.UUID(job_id)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            version = await stream_version(conn, stream)
            events = [
                JobAssigned(attempt=1, device_id=uuid.uuid4(), agent_id="agent-1"),
                JobStarted(attempt=1),
                JobFailed(attempt=1, kind=FailureKind.TEST, reason="flaky"),
                JobRetryScheduled(attempt=1, not_before=until, reason="retry"),
            ]
            await append(conn, stream, version, events, Metadata(org_id="qualgent", actor="t"))
        await Projector(db_url).catch_up()
        waiting = await _waiting(client, job_id)
        finished = (await client.get(f"/jobs/{job_id}")).json()
    assert waiting is not None and waiting["reason"] == "retry_backoff"
    assert dt.datetime.fromisoformat(waiting["until"]) == until
    assert finished["status"] == "retrying"


async def test_busy_slots_and_an_orgs_limit_hold_jobs_and_say_how_many_are_ahead(
    db_url: str,
) -> None:
    # Two slots, tests that take a minute, and at most one slot for "limited".
    agent = agent_config(
        "lab", "emulator:2", simulated={"test_s": 60.0}, org_limits={"limited": 1}
    )
    async with pipeline(db_url, agent), api_client(db_url) as client:
        limited = [
            await _submit(client, f"l{n}", org_id="limited") for n in range(2)
        ]
        busy = [await _submit(client, f"b{n}") for n in range(3)]

        async def held() -> list[dict[str, Any]] | None:
            jobs = [(await client.get(f"/jobs/{job_id}")).json() for job_id in limited + busy]
            running = [job for job in jobs if job["status"] == "running"]
            return [job["waiting"] for job in jobs if job["waiting"]] if len(running) == 2 else None

        waiting = await async_wait_until(held, timeout=20, what="two jobs running")
        for job_id in limited + busy:
            await client.post(f"/jobs/{job_id}/cancel")

    # The first of each org runs; the limited org's second waits for its own slot, and
    # the others for a free one, behind it in the queue.
    reasons = sorted((w["reason"], w.get("jobs_ahead")) for w in waiting)
    assert reasons == [("devices_busy", 1), ("devices_busy", 2), ("org_limit", None)]
    org_held = next(w for w in waiting if w["reason"] == "org_limit")
    assert org_held["message"] == "its organisation uses 1 of its 1 slots"
