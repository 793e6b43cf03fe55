"""The dashboard's JSON routes refuse bad input by name and answer for the caller's org."""

from __future__ import annotations

import uuid

import pytest

from http_api.tokens import create_token
from tests.support.api import api_client, job_body

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/dashboard/timeline?window=5", 400, "window"),
        ("/dashboard/timeline?window=an-hour", 400, "window"),
        ("/dashboard/timeline?run=not-a-run", 400, "run"),
        (f"/dashboard/timeline?run={uuid.uuid4()}", 404, "run"),
        ("/dashboard/runs/not-a-run", 400, "run_id"),
        (f"/dashboard/runs/{uuid.uuid4()}", 404, "run_id"),
        ("/dashboard/runs?limit=0", 400, "limit"),
    ],
)
async def test_a_bad_or_unknown_parameter_is_refused_by_name(
    db_url: str, path: str, status: int, field: str
) -> None:
    async with api_client(db_url) as client:
        response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


async def test_a_token_reads_only_its_own_runs_and_cannot_ask_for_another_org(
    db_url: str,
) -> None:
    acme, globex = create_token(db_url, "acme"), create_token(db_url, "globex")
    async with api_client(db_url, local_mode=False) as client:
        suite = {k: v for k, v in job_body(org_id="acme").items() if k != "test_path"}
        submitted = await client.post(
            "/jobs",
            json={**suite, "tests": ["tests/a.spec.js", "tests/b.spec.js"]},
            headers={"Authorization": f"Bearer {acme}"},
        )
        assert submitted.status_code == 201, submitted.text
        run_id = submitted.json()["run_id"]
        as_acme = {"Authorization": f"Bearer {acme}"}
        as_globex = {"Authorization": f"Bearer {globex}"}
        run = (await client.get(f"/dashboard/runs/{run_id}", headers=as_acme)).json()
        assert (run["progress"], len(run["jobs"]), run["org_id"]) == (0.0, 2, "acme")
        assert (await client.get(f"/dashboard/runs/{run_id}", headers=as_globex)).status_code == 404
        wrong = await client.get("/dashboard/devices?org=acme", headers=as_globex)
        assert (wrong.status_code, wrong.json()["error"]["field"]) == (403, "org")
        assert (await client.get("/dashboard/runs")).status_code == 401
