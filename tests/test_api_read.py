"""Reading over HTTP: jobs from the projections, long-polls, lists, timelines, runs, cancel."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from http_api.tokens import create_token
from ledger.events import (
    AppInstalled,
    DeviceRegistered,
    FailureKind,
    JobAssigned,
    JobFailed,
    JobPassed,
    JobStarted,
    Metadata,
    Target,
)
from ledger.store import append, stream_version
from projections.projector import Projector
from tests.support.api import api_client, job_body, ledger_state

pytestmark = pytest.mark.anyio

DEVICE = uuid.UUID("00000000-0000-4000-8000-00000000d001")
RUNNER = Metadata(org_id="qualgent", actor="runner:test")
ORGS = ("qualgent", "rival")


@pytest.fixture
async def client(db_url: str) -> Any:
    async with api_client(db_url) as client:
        yield client


async def _project(url: str) -> None:
    await Projector(url).catch_up()


async def _run(url: str, job_id: str, *, passed: bool = True) -> None:
    """Do what a runner does for one attempt, straight through the ledger."""
    stream = uuid.UUID(job_id)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        version = await stream_version(conn, stream)
        verdict = (
            JobPassed(attempt=1, duration_s=2.5, output="1 passed")
            if passed
            else JobFailed(
                attempt=1, kind=FailureKind.TEST, reason="expected 2, got 3", duration_s=1.5
            )
        )
        await append(
            conn,
            stream,
            version,
            [
                JobAssigned(attempt=1, device_id=DEVICE, agent_id="agent-1"),
                JobStarted(attempt=1),
                verdict,
            ],
            RUNNER,
        )


async def _submit(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json=job_body(**overrides))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_a_projected_job_shows_its_group(client: httpx.AsyncClient, db_url: str) -> None:
    job = await _submit(client)
    await _project(db_url)
    fetched = (await client.get(f"/jobs/{job['job_id']}")).json()
    assert fetched["status"] == "grouped"
    assert fetched["group_id"] is not None
    assert fetched["submitted_at"] == job["submitted_at"]


async def test_a_long_poll_returns_as_soon_as_the_job_ends(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job = await _submit(client)
    await _project(db_url)
    answers: list[httpx.Response] = []

    async def wait() -> None:
        answers.append(await client.get(f"/jobs/{job['job_id']}?wait=30"))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await anyio.sleep(0.3)  # the long-poll is holding; nothing has happened yet
        assert not answers
        await _run(db_url, job["job_id"])
        await _project(db_url)
    assert time.monotonic() - started < 5
    ended = answers[0].json()
    assert ended["status"] == "passed"
    assert ended["duration_s"] == 2.5
    assert ended["attempts"] == 1


async def test_a_long_poll_on_a_job_that_does_not_end_answers_when_the_wait_is_over(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job = await _submit(client)
    started = time.monotonic()
    response = await client.get(f"/jobs/{job['job_id']}?wait=0.5")
    assert response.status_code == 200
    assert response.json()["status"] == "grouped"
    assert 0.5 <= time.monotonic() - started < 5


async def test_a_run_long_poll_returns_when_every_job_has_ended(
    client: httpx.AsyncClient, db_url: str
) -> None:
    body = {k: v for k, v in job_body().items() if k != "test_path"}
    suite = (await client.post("/jobs", json={**body, "tests": ["a", "b"]})).json()
    await _project(db_url)
    first, second = (job["job_id"] for job in suite["jobs"])
    await _run(db_url, first)
    await _project(db_url)
    half = (await client.get(f"/runs/{suite['run_id']}?wait=0.2")).json()
    assert (half["done"], half["counts"]) == (False, {"passed": 1, "grouped": 1})
    answers: list[dict[str, Any]] = []

    async def wait() -> None:
        answers.append((await client.get(f"/runs/{suite['run_id']}?wait=30")).json())

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await anyio.sleep(0.2)
        await _run(db_url, second, passed=False)
        await _project(db_url)
    assert answers[0]["done"] is True
    assert answers[0]["counts"] == {"passed": 1, "failed": 1}
    failed = next(job for job in answers[0]["jobs"] if job["status"] == "failed")
    assert failed["last_error"] == "expected 2, got 3"


async def test_jobs_are_listed_newest_first_page_by_page(
    client: httpx.AsyncClient, db_url: str
) -> None:
    submitted = [(await _submit(client, test_path=f"t{i}.spec.js"))["job_id"] for i in range(7)]
    await _submit(client, org_id="rival")
    await _project(db_url)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query: dict[str, str | int] = {"org": "qualgent", "limit": 3}
        if cursor:
            query["cursor"] = cursor
        page = (await client.get("/jobs", params=query)).json()
        seen += [job["job_id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(submitted))
    assert pages == 3
    everyone = (await client.get("/jobs")).json()["jobs"]
    assert len(everyone) == 8


async def test_jobs_are_filtered_by_status_app_version_and_run(
    client: httpx.AsyncClient, db_url: str
) -> None:
    done = await _submit(client, test_path="done.spec.js")
    other = await _submit(client, app_version_id="abc999")
    body = {k: v for k, v in job_body().items() if k != "test_path"}
    suite = (await client.post("/jobs", json={**body, "tests": ["s1", "s2"]})).json()
    await _project(db_url)
    await _run(db_url, done["job_id"])
    await _project(db_url)

    async def ids(**query: str) -> set[str]:
        page = (await client.get("/jobs", params=query)).json()
        return {job["job_id"] for job in page["jobs"]}

    assert await ids(status="passed") == {done["job_id"]}
    assert await ids(app_version_id="abc999") == {other["job_id"]}
    assert await ids(run_id=suite["run_id"]) == {job["job_id"] for job in suite["jobs"]}


async def test_the_timeline_lists_every_event_of_the_job(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job = await _submit(client)
    await _project(db_url)
    await _run(db_url, job["job_id"])
    events = (await client.get(f"/jobs/{job['job_id']}/events")).json()["events"]
    assert [event["type"] for event in events] == [
        "JobSubmitted",
        "JobGrouped",
        "JobAssigned",
        "JobStarted",
        "JobPassed",
    ]
    assert [event["version"] for event in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"]["test_path"] == "tests/onboarding.spec.js"
    assert events[0]["metadata"]["actor"] == "api:local"
    assert events[-1]["data"]["output"] == "1 passed"


async def test_cancelling_a_queued_job_ends_it_and_cancelling_again_changes_nothing(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job = await _submit(client)
    await _project(db_url)
    cancelled = await client.post(f"/jobs/{job['job_id']}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["last_error"] == "not needed"
    before = ledger_state(db_url)
    again = await client.post(f"/jobs/{job['job_id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert ledger_state(db_url) == before
    await _project(db_url)
    assert (await client.get(f"/jobs/{job['job_id']}")).json()["status"] == "cancelled"


async def test_cancelling_a_finished_job_returns_it_as_it_ended(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job = await _submit(client)
    await _project(db_url)
    await _run(db_url, job["job_id"])
    before = ledger_state(db_url)
    response = await client.post(f"/jobs/{job['job_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "passed"
    assert ledger_state(db_url) == before


async def test_an_identical_active_job_is_returned_not_queued_again(
    client: httpx.AsyncClient, db_url: str
) -> None:
    first = await _submit(client)
    await _project(db_url)
    duplicate = await client.post("/jobs", json=job_body())
    assert duplicate.status_code == 200
    assert duplicate.json()["job_id"] == first["job_id"]
    forced = await client.post("/jobs", json=job_body(force=True))
    assert forced.status_code == 201
    assert forced.json()["job_id"] != first["job_id"]
    assert ledger_state(db_url)[0] == 4  # two jobs, each submitted and grouped


async def test_a_finished_job_does_not_block_an_identical_new_one(
    client: httpx.AsyncClient, db_url: str
) -> None:
    first = await _submit(client)
    await _project(db_url)
    await _run(db_url, first["job_id"])
    await _project(db_url)
    again = await client.post("/jobs", json=job_body())
    assert again.status_code == 201
    assert again.json()["job_id"] != first["job_id"]


async def test_groups_and_devices_come_from_the_projections(
    client: httpx.AsyncClient, db_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await append(
            conn,
            DEVICE,
            0,
            [DeviceRegistered(name="pixel-7", target=Target.DEVICE, agent_id="agent-1")],
            Metadata(org_id="qualgent", actor="runner:test"),
        )
    await _submit(client)
    await _submit(client, test_path="tests/checkout.spec.js")
    await _project(db_url)
    groups = (await client.get("/groups")).json()["groups"]
    assert len(groups) == 1
    assert (groups[0]["app_version_id"], groups[0]["target"]) == ("xyz123", "device")
    assert groups[0]["queued"] == 2
    devices = (await client.get("/devices")).json()["devices"]
    assert [(d["device_id"], d["name"], d["target"]) for d in devices] == [
        (str(DEVICE), "pixel-7", "device")
    ]


async def test_a_token_lists_only_its_own_orgs_jobs_and_groups(db_url: str) -> None:
    mine = {"Authorization": f"Bearer {create_token(db_url, 'qualgent')}"}
    theirs = {"Authorization": f"Bearer {create_token(db_url, 'rival')}"}
    async with api_client(db_url, local_mode=False) as client:
        body = {k: v for k, v in job_body().items() if k != "org_id"}
        job = (await client.post("/jobs", json=body, headers=mine)).json()
        rival = (await client.post("/jobs", json=body, headers=theirs)).json()
        await _project(db_url)
        listed = (await client.get("/jobs", headers=mine)).json()["jobs"]
        assert [j["job_id"] for j in listed] == [job["job_id"]]
        groups = (await client.get("/groups", headers=theirs)).json()["groups"]
        assert {g["org_id"] for g in groups} == {"rival"}
        assert (await client.get(f"/jobs/{rival['job_id']}", headers=mine)).status_code == 404
        run = await client.get(f"/runs/{uuid.uuid4()}", headers=mine)
        assert run.status_code == 404


async def test_a_device_shows_each_org_only_its_own_installs_and_group(db_url: str) -> None:
    tokens = {org: {"Authorization": f"Bearer {create_token(db_url, org)}"} for org in ORGS}
    body = {k: v for k, v in job_body().items() if k != "org_id"}
    async with api_client(db_url, local_mode=False) as client:
        rival_job = (await client.post("/jobs", json=body, headers=tokens["rival"])).json()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await append(
                conn,
                DEVICE,
                0,
                [DeviceRegistered(name="pixel-7", target=Target.DEVICE, agent_id="agent-1")],
                Metadata(org_id="system", actor="runner:test"),
            )
            await append(
                conn,
                DEVICE,
                1,
                [
                    AppInstalled(
                        app_version_id="secret-build-7", group_id=uuid.UUID(rival_job["group_id"])
                    )
                ],
                Metadata(org_id="rival", actor="runner:test"),
            )
            job_id = uuid.UUID(rival_job["job_id"])
            await append(
                conn,
                job_id,
                await stream_version(conn, job_id),
                [JobAssigned(attempt=1, device_id=DEVICE, agent_id="agent-1")],
                Metadata(org_id="rival", actor="runner:test"),
            )
        await _project(db_url)
        seen = {
            org: (await client.get("/devices", headers=tokens[org])).json()["devices"]
            for org in ORGS
        }
        dashboard = (await client.get("/dashboard/snapshot", headers=tokens["qualgent"])).json()

    assert [(d["name"], d["state"]) for d in seen["qualgent"]] == [("pixel-7", "busy")]
    assert (seen["qualgent"][0]["installed_apps"], seen["qualgent"][0]["current_group"]) == (
        [],
        None,
    )
    assert (seen["rival"][0]["installed_apps"], seen["rival"][0]["current_group"]) == (
        ["secret-build-7"],
        rival_job["group_id"],
    )
    assert "secret-build-7" not in str(dashboard)
