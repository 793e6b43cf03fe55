"""Run-level control through the API: cancel a run, supersede older runs by key."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from http_api.tokens import create_token
from projections.projector import Projector
from tests.support.api import api_client, job_body, ledger_state

pytestmark = pytest.mark.anyio


async def _suite(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    body = {k: v for k, v in job_body(**fields).items() if k != "test_path"}
    if headers:
        body.pop("org_id")
    body["tests"] = ["tests/a.spec.js", "tests/b.spec.js"]
    response = await client.post("/jobs", json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def test_cancelling_a_run_cancels_each_unfinished_job_once(db_url: str) -> None:
    async with api_client(db_url) as client:
        run = await _suite(client)
        first = await client.post(f"/runs/{run['run_id']}/cancel", json={"reason": "not needed"})
        before = ledger_state(db_url)
        again = await client.post(f"/runs/{run['run_id']}/cancel")
        unknown = await client.post(f"/runs/{uuid.uuid4()}/cancel")
        bad = await client.post(f"/runs/{run['run_id']}/cancel", json={"why": "x"})

    assert first.status_code == 200
    document = first.json()
    assert document["done"] is True and document["counts"] == {"cancelled": 2}
    assert {job["last_error"] for job in document["jobs"]} == {"not needed"}
    assert again.status_code == 200 and ledger_state(db_url) == before, "nothing appended again"
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "run_id"
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "why"


async def test_a_run_supersedes_only_older_runs_of_its_org_with_its_key(db_url: str) -> None:
    mine = {"Authorization": f"Bearer {create_token(db_url, 'qualgent')}"}
    theirs = {"Authorization": f"Bearer {create_token(db_url, 'rival')}"}
    async with api_client(db_url, local_mode=False) as client:
        older = await _suite(client, mine, supersede_key="main")
        other_key = await _suite(client, mine, supersede_key="feature")
        rival = await _suite(client, theirs, supersede_key="main")
        await Projector(db_url).catch_up()
        newer = await _suite(client, mine, supersede_key="main")
        keyless = await _suite(client, mine)
        superseded = await client.post(f"/runs/{newer['run_id']}/supersede", headers=mine)
        refused = await client.post(f"/runs/{keyless['run_id']}/supersede", headers=mine)
        hidden = await client.post(f"/runs/{newer['run_id']}/cancel", headers=theirs)
        await Projector(db_url).catch_up()
        runs = {
            name: (await client.get(f"/runs/{run['run_id']}", headers=headers)).json()["counts"]
            for name, run, headers in (
                ("older", older, mine),
                ("other_key", other_key, mine),
                ("rival", rival, theirs),
                ("newer", newer, mine),
            )
        }

    assert superseded.status_code == 200, superseded.text
    cancelled = superseded.json()["cancelled"]
    assert sorted(job["job_id"] for job in cancelled) == sorted(
        job["job_id"] for job in older["jobs"]
    )
    assert cancelled[0]["last_error"] == f"superseded by run {newer['run_id']} (main)"
    assert runs == {
        "older": {"cancelled": 2},
        "other_key": {"grouped": 2},
        "rival": {"grouped": 2},
        "newer": {"grouped": 2},
    }
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "supersede_key"
    assert hidden.status_code == 404, "another organisation's run is not there"
