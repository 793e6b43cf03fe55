"""API tokens: list and revoke with qgjobd, revocation at once on every API process, and
the metrics scope."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_api.tokens import Scope, create_token
from projections.projector import Projector
from tests.support.api import REPO_ROOT, api_client, job_body, uvicorn_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio


def _qgjobd(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "qgjobd.py", "token", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "QGJOB_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_a_revoked_token_is_refused_at_once_by_every_api_server(
    db_url: str, tmp_path: Path
) -> None:
    created = _qgjobd(db_url, "create", "--org", "qualgent", "--label", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    listed = _qgjobd(db_url, "list").stdout.splitlines()
    assert len(listed) == 1
    token_id, org, scopes, _created_at, state, label = listed[0].split("\t")
    assert (org, scopes, state, label) == ("qualgent", "jobs", "active", "ci")
    env = {"QGJOB_DATABASE_URL": db_url}
    with contextlib.ExitStack() as servers:
        bases = [
            servers.enter_context(uvicorn_server(env, log=tmp_path / f"api-{n}.log"))
            for n in range(2)
        ]
        for base in bases:  # each server now trusts the token without asking again
            assert httpx.get(f"{base}/jobs", headers=_bearer(token)).status_code == 200

        revoked = _qgjobd(db_url, "revoke", token_id)

        assert revoked.returncode == 0, revoked.stderr
        for base in bases:
            # Far sooner than the 30 s a verified token is otherwise trusted for.
            wait_until(
                lambda base=base: (
                    httpx.get(f"{base}/jobs", headers=_bearer(token)).status_code == 401
                ),
                timeout=3,
                what=f"{base} to refuse the revoked token",
            )
    assert _qgjobd(db_url, "list", "--org", "qualgent").stdout.split("\t")[4] != "active"
    assert _qgjobd(db_url, "list", "--org", "rival").stdout == ""


def test_revoking_a_token_that_does_not_exist_is_exit_2(db_url: str) -> None:
    result = _qgjobd(db_url, "revoke", str(uuid.uuid4()))
    assert result.returncode == 2
    assert "no token" in result.stderr


def _queue_orgs(text: str) -> set[str]:
    return {
        sample.labels["org"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "org" in sample.labels
    }


async def test_metrics_need_a_metrics_token_and_show_only_its_organisation(db_url: str) -> None:
    jobs_only = _bearer(create_token(db_url, "qualgent"))
    scraper = _bearer(create_token(db_url, "qualgent", scopes=[Scope.METRICS]))
    both = _bearer(create_token(db_url, "rival", scopes=[Scope.JOBS, Scope.METRICS]))
    async with api_client(db_url, local_mode=False) as client:
        body = {k: v for k, v in job_body().items() if k != "org_id"}
        assert (await client.post("/jobs", json=body, headers=jobs_only)).status_code == 201
        assert (await client.post("/jobs", json=body, headers=both)).status_code == 201
        await Projector(db_url).catch_up()

        anonymous = await client.get("/metrics")
        wrong_scope = await client.get("/metrics", headers=jobs_only)
        scraped = await client.get("/metrics", headers=scraper)
        other_org = await client.get("/metrics?org=rival", headers=scraper)
        scraper_submits = await client.post("/jobs", json=body, headers=scraper)

    assert anonymous.status_code == 401
    assert (wrong_scope.status_code, wrong_scope.json()["error"]["code"]) == (
        403,
        "insufficient_scope",
    )
    assert scraped.status_code == 200
    assert _queue_orgs(scraped.text) == {"qualgent"}
    assert "rival" not in scraped.text
    assert other_org.status_code == 403
    assert scraper_submits.status_code == 403
