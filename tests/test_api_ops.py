"""Operations endpoints: health, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from starlette.routing import Route

from http_api.app import routes
from ledger.events import (
    DeviceRegistered,
    JobAssigned,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    Metadata,
    Target,
)
from ledger.store import append
from projections.projector import Projector
from tests.support.api import api_client, job_body

pytestmark = pytest.mark.anyio


async def test_openapi_describes_exactly_the_routes(db_url: str) -> None:
    async with api_client(db_url) as client:
        document = (await client.get("/openapi.json")).json()
    described = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (route.path, method)
        for route in routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert described == served


def test_the_openapi_submit_schema_lists_the_fields_the_ledger_accepts() -> None:
    from http_api.openapi import openapi_document

    schemas = openapi_document()["components"]["schemas"]
    ledger_fields = {field.name for field in attrs.fields(JobSubmitted)} - {"run_id"}
    assert set(schemas["SubmitJob"]["properties"]) == ledger_fields | {"force"}
    assert set(schemas["SubmitSuite"]["properties"]) == (
        ledger_fields - {"test_path"} | {"force", "tests"}
    )
    profile = {"platform", "device", "os_version"}
    assert set(schemas["DeviceProfile"]["properties"]) == profile
    assert set(schemas["SubmitMatrix"]["properties"]) == (
        ledger_fields - profile | {"force", "tests", "profiles"}
    )


async def test_healthz_answers_without_the_database(db_url: str) -> None:
    async with api_client(db_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_ready_when_the_projector_has_caught_up(db_url: str) -> None:
    async with api_client(db_url) as client:
        await client.post("/jobs", json=job_body())
        await Projector(db_url).catch_up()
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


async def test_readyz_fails_when_the_projector_lags_beyond_the_bound(db_url: str) -> None:
    async with api_client(db_url, ready_max_lag_s=0.0) as client:
        await client.post("/jobs", json=job_body())
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "projector_lagging"


async def test_readyz_fails_when_the_database_is_down(pg_server_url: str) -> None:
    name = f"qgjob_doomed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    from ledger.migrate import apply_migrations

    apply_migrations(url)
    async with api_client(url, pool_timeout_s=1.0) as client:
        assert (await client.get("/readyz")).status_code == 200
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert (await client.get("/healthz")).status_code == 200
        job = await client.get(f"/jobs/{uuid.uuid4()}")
        assert job.status_code == 503
        assert job.json()["error"]["code"] == "database_unavailable"


def _samples(text: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, []).extend(family.samples)
    return found


async def _pass(url: str, job_id: str, duration_s: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await append(
            conn,
            uuid.UUID(job_id),
            2,
            [
                JobAssigned(attempt=1, device_id=uuid.uuid4(), agent_id="agent-1"),
                JobStarted(attempt=1),
                JobPassed(attempt=1, duration_s=duration_s),
            ],
            Metadata(org_id="qualgent", actor="runner:test"),
        )


async def test_metrics_parse_and_report_queue_durations_and_lag(db_url: str) -> None:
    async with api_client(db_url) as client:
        done = (await client.post("/jobs", json=job_body())).json()
        await client.post("/jobs", json=job_body(test_path="b.spec.js"))
        await client.post("/jobs", json=job_body(org_id="rival", target="emulator"))
        await Projector(db_url).catch_up()
        await _pass(db_url, done["job_id"], 12.0)
        await Projector(db_url).catch_up()
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    depth = {
        (s.labels["org"], s.labels["target"], s.labels["status"]): s.value
        for s in samples["qgjob_queue_depth"]
    }
    assert depth == {("qualgent", "device", "grouped"): 1, ("rival", "emulator", "grouped"): 1}
    finished = {
        (s.labels["org"], s.labels["status"]): s.value
        for s in samples["qgjob_jobs_finished"]
        if s.name == "qgjob_jobs_finished_total"
    }
    assert finished == {("qualgent", "passed"): 1}
    durations = {
        (s.name, s.labels.get("le")): s.value
        for s in samples["qgjob_job_duration_seconds"]
        if s.labels["target"] == "device" and s.labels["status"] == "passed"
    }
    assert durations[("qgjob_job_duration_seconds_count", None)] == 1
    assert durations[("qgjob_job_duration_seconds_sum", None)] == 12.0
    assert durations[("qgjob_job_duration_seconds_bucket", "5.0")] == 0
    assert durations[("qgjob_job_duration_seconds_bucket", "15.0")] == 1
    installs = {s.name: s.value for s in samples["qgjob_installs"]}
    assert set(installs) == {"qgjob_installs_total"}
    assert "qgjob_installs_saved" in samples
    lag = {s.name: s.value for s in samples["qgjob_projector_lag_events"]}
    assert lag == {"qgjob_projector_lag_events": 0}
    assert [s.value for s in samples["qgjob_projector_running"]] == [0]
    posts = [
        s
        for s in samples["qgjob_http_requests"]
        if s.name == "qgjob_http_requests_total" and s.labels["route"] == "/jobs"
    ]
    assert sum(s.value for s in posts) == 3


async def test_metrics_count_attempts_lost_to_expired_leases(db_url: str) -> None:
    device = uuid.uuid4()
    async with api_client(db_url) as client:
        job = (await client.post("/jobs", json=job_body())).json()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await append(
                conn,
                device,
                0,
                [DeviceRegistered(name="pixel", target=Target.DEVICE, agent_id="agent-1")],
                Metadata(org_id="qualgent", actor="runner:test"),
            )
            await Projector(db_url).catch_up()
            await append(
                conn,
                uuid.UUID(job["job_id"]),
                2,
                [
                    JobAssigned(attempt=1, device_id=device, agent_id="agent-1"),
                    JobLeaseExpired(attempt=1, agent_id="agent-1"),
                    JobRetryScheduled(
                        attempt=1, not_before=dt.datetime.now(dt.UTC), reason="agent lost"
                    ),
                ],
                Metadata(org_id="qualgent", actor="runner:rescuer"),
            )
        await Projector(db_url).catch_up()
        response = await client.get("/metrics")
    expiries = {
        s.labels["target"]: s.value
        for s in _samples(response.text)["qgjob_lease_expiries"]
        if s.name == "qgjob_lease_expiries_total"
    }
    assert expiries == {"device": 1}
