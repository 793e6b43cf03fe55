"""No organisation sees another's data: every route of the OpenAPI document, called with
one organisation's token and another organisation's ids, names and filters.

The other organisation ("rival") has jobs, a suite, a group, and an app installed on a
shared device, each under names found nowhere else. Every call must answer 403 or 404,
or answer without a trace of any of them; and none may change rival's jobs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from http_api.openapi import openapi_document
from http_api.tokens import Scope, create_token
from ledger.events import AppInstalled, DeviceRegistered, JobAssigned, Metadata, Target
from ledger.store import append, stream_version
from projections.projector import Projector
from tests.support.api import qgjobd_api

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RIVAL = "rival-org-7"
RIVAL_BUILD = "rival-build-9"
RIVAL_TEST = "rival/secret-checkout.spec.js"
#: The name of a build only rival uploaded; its digest is no secret (anyone holding the
#: bytes can compute it), but that rival has it, and under what name, is.
RIVAL_BLOB_NAME = "rival-secret-build.apk"
RIVAL_BLOB = b"rival's build"
DEVICE = uuid.UUID("00000000-0000-4000-8000-00000000d007")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _rival_history(db_url: str, base: str, token: str) -> dict[str, str]:
    """Give rival a job, a suite, a group and an install; return their ids by name."""
    body = {"app_version_id": RIVAL_BUILD, "target": "device"}
    async with httpx.AsyncClient(base_url=base, headers=_bearer(token)) as client:
        job = (await client.post("/jobs", json={**body, "test_path": RIVAL_TEST})).json()
        suite = (await client.post("/jobs", json={**body, "tests": [RIVAL_TEST, "b"]})).json()
        digest = hashlib.sha256(RIVAL_BLOB).hexdigest()
        uploaded = await client.put(
            f"/blobs/{digest}",
            params={"kind": "build", "name": RIVAL_BLOB_NAME},
            content=RIVAL_BLOB,
        )
        assert uploaded.status_code == 201, uploaded.text
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        registered = DeviceRegistered(name="shared-pixel", target=Target.DEVICE, agent_id="a1")
        await append(conn, DEVICE, 0, [registered], Metadata(org_id="system", actor="runner"))
        installed = AppInstalled(app_version_id=RIVAL_BUILD, group_id=uuid.UUID(job["group_id"]))
        await append(conn, DEVICE, 1, [installed], Metadata(org_id=RIVAL, actor="runner"))
        job_id = uuid.UUID(job["job_id"])
        await append(
            conn,
            job_id,
            await stream_version(conn, job_id),
            [JobAssigned(attempt=1, device_id=DEVICE, agent_id="a1")],
            Metadata(org_id=RIVAL, actor="runner"),
        )
    await Projector(db_url).catch_up()
    return {
        "job_id": job["job_id"],
        "run_id": suite["run_id"],
        "group_id": job["group_id"],
        "suite_job": suite["jobs"][0]["job_id"],
        "sha256": digest,
    }


def _requests(rival: dict[str, str]) -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """(method, path, query, JSON body) for every operation of the OpenAPI document: once
    plainly, and once with each of its query parameters naming something of rival's."""
    rival_values = {"org": RIVAL, "app_version_id": RIVAL_BUILD, "run_id": rival["run_id"]}
    bodies = {
        "/jobs": {
            "org_id": RIVAL,
            "app_version_id": RIVAL_BUILD,
            "test_path": "x",
            "target": "device",
        },
        "/submit-job": {
            "org_id": RIVAL,
            "app_version_id": RIVAL_BUILD,
            "tests": ["x"],
            "target": "device",
        },
        "/jobs/{job_id}/cancel": {"reason": "not yours"},
    }
    for template, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            path = template.format(
                job_id=rival["job_id"], run_id=rival["run_id"], sha256=rival["sha256"]
            )
            body = bodies.get(template) if method == "post" else None
            # A store needs its kind; with no content, it cannot match rival's digest.
            query = {"kind": "build"} if method == "put" else {}
            yield method.upper(), path, query, body
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                if parameter["in"] == "query" and name in rival_values:
                    yield method.upper(), path, {**query, name: rival_values[name]}, body


async def _answer(
    client: httpx.AsyncClient, method: str, path: str, query: dict[str, Any], body: Any
) -> tuple[int, str]:
    if path == "/dashboard/changes":
        # It says only that something changed, and only when it does: the status is all.
        async with client.stream(method, path, params=query) as response:
            return response.status_code, ""
    if path == "/events/stream":
        async with client.stream(method, path, params=query) as response:
            text = ""
            if response.status_code == 200:
                async for line in response.aiter_lines():
                    text += line + "\n"
                    if line.startswith("data:"):
                        break
            else:
                text = (await response.aread()).decode()
            return response.status_code, text
    response = await client.request(method, path, params=query, json=body)
    return response.status_code, response.text


def _rival_events(db_url: str, stream_ids: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "select stream_id, version, type from events where stream_id = any(%s::uuid[]) "
            "order by position",
            (stream_ids,),
        ).fetchall()


async def test_no_route_shows_or_changes_another_organisations_data(
    db_url: str, tmp_path: Path
) -> None:
    scopes = [Scope.JOBS, Scope.METRICS]
    mine, theirs = create_token(db_url, "qualgent", scopes=scopes), create_token(db_url, RIVAL)
    with qgjobd_api(db_url, "--max-wait", "1", log=tmp_path / "api.log") as base:
        rival = await _rival_history(db_url, base, theirs)
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with httpx.AsyncClient(base_url=base) as client:
            # Some of my own, so that lists and counts have something to show.
            mine_body = {"app_version_id": "mine-1", "test_path": "t.spec.js", "target": "device"}
            await client.post("/jobs", json=mine_body, headers=_bearer(mine))
            await Projector(db_url).catch_up()
            before = _rival_events(db_url, [rival["job_id"], rival["suite_job"]])
            secrets = [RIVAL, RIVAL_BUILD, RIVAL_TEST, RIVAL_BLOB_NAME]
            secrets += [value for name, value in rival.items() if name != "sha256"]
            tried = set()
            for method, path, query, body in _requests(rival):
                client.headers.update(_bearer(mine))
                status, text = await _answer(client, method, path, query, body)
                tried.add((method, path))
                seen = [secret for secret in secrets if secret in text]
                # Storing under rival's digest content that is not theirs is refused as
                # such (422), and says nothing of theirs.
                refused = method == "PUT" and status == 422 and not seen
                assert status in (403, 404) or (status < 400 and not seen) or refused, (
                    f"{method} {path} {json.dumps(query)}: {status} {seen} {text[:300]}"
                )
    routes = {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert len(tried) == len(routes)
    assert _rival_events(db_url, [rival["job_id"], rival["suite_job"]]) == before
