"""Submitting jobs over HTTP: single jobs, suites, bad input, idempotency, auth scoping."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from http_api import create_app
from http_api.tokens import create_token
from ledger.events import JobGrouped
from ledger.grouping import UnknownStrategy
from ledger.store import read_stream
from projections import Projector
from tests.support.api import api_client, job_body, ledger_state

pytestmark = pytest.mark.anyio


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _without(field: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {k: v for k, v in (body or job_body()).items() if k != field}


def _case(
    name: str,
    route: str,
    body: bytes | None = None,
    *,
    field: str | None = None,
    status: int = 400,
    code: str = "invalid_field",
    headers: dict[str, str] | None = None,
) -> Any:
    return pytest.param(route, headers, body, status, code, field, id=name)


def _raw(**fields: bytes) -> bytes:
    """A submit body with *fields* holding raw bytes, which need not be UTF-8."""
    body = _json({k: v for k, v in job_body().items() if k not in fields})
    for name, value in fields.items():
        body = body.replace(b"}", b', "' + name.encode() + b'": "' + value + b'"}')
    return body


def _surrogate(field: str) -> bytes:
    """A submit body whose *field* (a list for tags) holds a lone surrogate."""
    escaped = '"\\ud800"'
    value = f"[{escaped}]" if field == "tags" else escaped
    body = json.dumps({k: v for k, v in job_body().items() if k != field})
    return (body[:-1] + f', "{field}": {value}}}').encode()


SUITE = _without("test_path")

BAD_INPUTS = [
    _case("missing field", "POST /jobs", _json(_without("app_version_id")), field="app_version_id"),
    _case("wrong-typed priority", "POST /jobs", _json(job_body(priority="5")), field="priority"),
    _case("boolean priority", "POST /jobs", _json(job_body(priority=True)), field="priority"),
    _case("priority above range", "POST /jobs", _json(job_body(priority=11)), field="priority"),
    _case("priority below range", "POST /jobs", _json(job_body(priority=0)), field="priority"),
    _case("unknown target", "POST /jobs", _json(job_body(target="phone")), field="target"),
    _case("unknown field", "POST /jobs", _json(job_body(colour="red")), field="colour"),
    _case("empty test path", "POST /jobs", _json(job_body(test_path="")), field="test_path"),
    _case("org with spaces", "POST /jobs", _json(job_body(org_id="a b")), field="org_id"),
    _case("tags not a list", "POST /jobs", _json(job_body(tags="smoke")), field="tags"),
    _case("zero attempts", "POST /jobs", _json(job_body(max_attempts=0)), field="max_attempts"),
    _case("negative timeout", "POST /jobs", _json(job_body(timeout_s=-1)), field="timeout_s"),
    _case("client run id", "POST /jobs", _json(job_body(run_id=str(uuid.uuid4()))), field="run_id"),
    _case("force not a boolean", "POST /jobs", _json(job_body(force="yes")), field="force"),
    _case("empty suite", "POST /jobs", _json({**SUITE, "tests": []}), field="tests"),
    _case("null tests", "POST /jobs", _json({**SUITE, "tests": None}), field="tests"),
    _case("null profiles", "POST /jobs", _json(job_body(profiles=None)), field="profiles"),
    _case(
        "a profile that is not an object",
        "POST /jobs",
        _json(job_body(profiles=[[None, None]])),
        field="profiles[0]",
    ),
    _case(
        "suite with a non-string test",
        "POST /jobs",
        _json({**SUITE, "tests": ["a.spec.js", 7]}),
        field="tests[1]",
    ),
    _case("test_path and tests", "POST /jobs", _json(job_body(tests=["a"])), field="tests"),
    _case(
        "body over 64 KiB",
        "POST /jobs",
        _json(job_body(repo="r" * 70_000)),
        status=413,
        code="body_too_large",
    ),
    _case("malformed JSON", "POST /jobs", b'{"org_id": "q",', code="malformed_json"),
    _case("NaN is not JSON", "POST /jobs", b'{"timeout_s": NaN}', code="malformed_json"),
    _case("not UTF-8", "POST /jobs", b'{"org_id": "\xff"}', field="org_id"),
    _case("test path not UTF-8", "POST /jobs", _raw(test_path=b"a\xff.spec.js"), field="test_path"),
    _case("NUL in test path", "POST /jobs", _json(job_body(test_path="a\0.js")), field="test_path"),
    _case("NUL in a tag", "POST /jobs", _json(job_body(tags=["ok", "a\0"])), field="tags[1]"),
    _case("NUL in build", "POST /jobs", _json(job_body(build="app\0.apk")), field="build"),
    _case(
        "NUL in a suite's test", "POST /jobs", _json({**SUITE, "tests": ["\0"]}), field="tests[0]"
    ),
    _case("lone surrogate in test path", "POST /jobs", _surrogate("test_path"), field="test_path"),
    _case("lone surrogate in build", "POST /jobs", _surrogate("build"), field="build"),
    _case("lone surrogate in a tag", "POST /jobs", _surrogate("tags"), field="tags[0]"),
    _case("NUL in a field name", "POST /jobs", _json({**job_body(), "a\0": 1})),
    _case("tag too long", "POST /jobs", _json(job_body(tags=["t" * 5000])), field="tags[0]"),
    _case("infinite timeout", "POST /jobs", b'{"timeout_s": 1e999}', field="timeout_s"),
    _case("absurd timeout", "POST /jobs", _json(job_body(timeout_s=1e300)), field="timeout_s"),
    _case(
        "week-long plus timeout", "POST /jobs", _json(job_body(timeout_s=604801)), field="timeout_s"
    ),
    _case(
        "huge integer timeout", "POST /jobs", _json(job_body(timeout_s=10**400)), field="timeout_s"
    ),
    _case(
        "infinite queue timeout",
        "POST /jobs",
        _json(job_body()).replace(b"}", b', "queue_timeout_s": 1e999}'),
        field="queue_timeout_s",
    ),
    _case(
        "absurd queue timeout",
        "POST /jobs",
        _json(job_body(queue_timeout_s=1e300)),
        field="queue_timeout_s",
    ),
    _case(
        "NUL in the cancel reason",
        f"POST /jobs/{uuid.uuid4()}/cancel",
        _json({"reason": "\0"}),
        field="reason",
    ),
    _case("JSON array body", "POST /jobs", _json([job_body()]), code="invalid_body"),
    _case("empty body", "POST /jobs", b"", code="empty_body"),
    _case(
        "long Idempotency-Key",
        "POST /jobs",
        _json(job_body()),
        code="invalid_header",
        field="Idempotency-Key",
        headers={"Idempotency-Key": "k" * 201},
    ),
    _case(
        "alias, missing field", "POST /submit-job", _json({"org_id": "q"}), field="app_version_id"
    ),
    _case("bad job UUID", "GET /jobs/not-a-uuid", code="invalid_id", field="job_id"),
    _case("bad UUID on the alias", "GET /status/12345", code="invalid_id", field="job_id"),
    _case("bad UUID to cancel", "POST /jobs/xyz/cancel", code="invalid_id", field="job_id"),
    _case("bad UUID for events", "GET /jobs/xyz/events", code="invalid_id", field="job_id"),
    _case("bad run UUID", "GET /runs/xyz", code="invalid_id", field="run_id"),
    _case(
        "unknown job", f"GET /jobs/{uuid.uuid4()}", status=404, code="job_not_found", field="job_id"
    ),
    _case(
        "unknown job's events",
        f"GET /jobs/{uuid.uuid4()}/events",
        status=404,
        code="job_not_found",
        field="job_id",
    ),
    _case(
        "cancel an unknown job",
        f"POST /jobs/{uuid.uuid4()}/cancel",
        status=404,
        code="job_not_found",
        field="job_id",
    ),
    _case(
        "unknown run", f"GET /runs/{uuid.uuid4()}", status=404, code="run_not_found", field="run_id"
    ),
    _case(
        "cancel, unknown field",
        f"POST /jobs/{uuid.uuid4()}/cancel",
        _json({"why": "x"}),
        field="why",
    ),
    _case("unknown status filter", "GET /jobs?status=weird", code="invalid_query", field="status"),
    _case("zero page size", "GET /jobs?limit=0", code="invalid_query", field="limit"),
    _case("page size not a number", "GET /jobs?limit=ten", code="invalid_query", field="limit"),
    _case("forged cursor", "GET /jobs?cursor=bm9wZQ", code="invalid_query", field="cursor"),
    _case("bad run filter", "GET /jobs?run_id=7", code="invalid_query", field="run_id"),
    _case(
        "wait too long", f"GET /jobs/{uuid.uuid4()}?wait=999", code="invalid_query", field="wait"
    ),
    _case("negative wait", f"GET /runs/{uuid.uuid4()}?wait=-1", code="invalid_query", field="wait"),
    _case(
        "NUL in a filter",
        "GET /jobs?app_version_id=%00",
        code="invalid_query",
        field="app_version_id",
    ),
    _case(
        "filter not UTF-8",
        "GET /jobs?app_version_id=%FF",
        code="invalid_query",
        field="app_version_id",
    ),
    _case("NUL in the org", "GET /groups?org=a%00", code="invalid_query", field="org"),
    _case("org not UTF-8", "GET /devices?org=%ED%A0%80", code="invalid_query", field="org"),
    _case("NUL in a cursor", "GET /jobs?cursor=%00", code="invalid_query", field="cursor"),
    _case("empty page size", "GET /jobs?limit=", code="invalid_query", field="limit"),
    _case("padded page size", "GET /groups?limit=%205", code="invalid_query", field="limit"),
    _case("page size twice", "GET /jobs?limit=5&limit=6", code="invalid_query", field="limit"),
    _case("empty run filter", "GET /jobs?run_id=", code="invalid_query", field="run_id"),
    _case(
        "infinite wait", f"GET /jobs/{uuid.uuid4()}?wait=inf", code="invalid_query", field="wait"
    ),
    _case("unknown path", "GET /nope", status=404, code="not_found"),
    _case("wrong method", "DELETE /jobs", status=405, code="method_not_allowed"),
]


@pytest.fixture
async def client(db_url: str) -> Any:
    async with api_client(db_url) as client:
        yield client


@pytest.mark.parametrize(("route", "headers", "body", "status", "code", "field"), BAD_INPUTS)
async def test_bad_input_gets_a_4xx_naming_the_problem_and_appends_nothing(
    client: httpx.AsyncClient,
    db_url: str,
    route: str,
    headers: dict[str, str] | None,
    body: bytes | None,
    status: int,
    code: str,
    field: str | None,
) -> None:
    before = ledger_state(db_url)
    method, path = route.split(" ")
    response = await client.request(
        method,
        path,
        content=body,
        headers={"content-type": "application/json", **(headers or {})},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert (error["code"], error["field"]) == (code, field), error
    assert error["message"]
    if field is not None and code == "invalid_field":
        assert field.split("[")[0] in error["message"]
    assert ledger_state(db_url) == before


async def test_a_submitted_job_is_answered_201_and_readable_at_once(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/jobs", json=job_body(priority=7, tags=["smoke"]))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "grouped"
    assert job["group_id"] is not None
    assert job["priority"] == 7
    assert job["tags"] == ["smoke"]
    assert job["run_id"] is None
    # Not projected yet (no projector runs here): still answered, from the job's stream,
    # and saying why it waits: no device slot is registered here.
    for path in (f"/jobs/{job['job_id']}", f"/status/{job['job_id']}"):
        fetched = await client.get(path)
        assert fetched.status_code == 200
        assert fetched.json() == {
            **job,
            "waiting": {"reason": "no_device", "message": "no live device slot is registered"},
        }


async def test_the_readme_alias_submits_too(client: httpx.AsyncClient) -> None:
    response = await client.post("/submit-job", json=job_body())
    assert response.status_code == 201
    assert (await client.get(f"/status/{response.json()['job_id']}")).json()[
        "status"
    ] == "grouped"


async def test_a_suite_is_one_run_appended_all_at_once(
    client: httpx.AsyncClient, db_url: str
) -> None:
    body = {k: v for k, v in job_body().items() if k != "test_path"}
    tests = ["tests/a.spec.js", "tests/b.spec.js", "tests/c.spec.js"]
    response = await client.post("/jobs", json={**body, "tests": tests})
    assert response.status_code == 201, response.text
    suite = response.json()
    assert [job["test_path"] for job in suite["jobs"]] == tests
    assert {job["run_id"] for job in suite["jobs"]} == {suite["run_id"]}
    run = (await client.get(f"/runs/{suite['run_id']}")).json()
    assert run["done"] is False
    assert run["counts"] == {"grouped": 3}
    assert [job["job_id"] for job in run["jobs"]] == [job["job_id"] for job in suite["jobs"]]
    with psycopg.connect(db_url) as conn:
        transactions = conn.execute("select count(distinct txid) from events").fetchone()
    assert transactions == (1,)


async def test_a_suite_with_one_bad_test_appends_none_of_it(
    client: httpx.AsyncClient, db_url: str
) -> None:
    body = {k: v for k, v in job_body().items() if k != "test_path"}
    response = await client.post("/jobs", json={**body, "tests": ["a.spec.js", "b.spec.js", ""]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "tests[2]"
    assert ledger_state(db_url) == (0, 0)


async def test_a_retried_submit_with_the_same_key_returns_the_same_job(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/jobs", json=job_body(), headers=key)
    again = await client.post("/jobs", json=job_body(), headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert ledger_state(db_url)[0] == 2  # one job: its JobSubmitted and JobGrouped


async def test_a_retried_suite_with_the_same_key_returns_the_same_run(
    client: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "suite-1"}
    body = {**{k: v for k, v in job_body().items() if k != "test_path"}, "tests": ["a", "b"]}
    first = (await client.post("/jobs", json=body, headers=key)).json()
    again = await client.post("/jobs", json=body, headers=key)
    assert again.status_code == 200
    assert again.json()["run_id"] == first["run_id"]
    assert [j["job_id"] for j in again.json()["jobs"]] == [j["job_id"] for j in first["jobs"]]


async def test_an_idempotency_key_reused_for_another_request_is_refused(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = {"Idempotency-Key": "reused"}
    assert (await client.post("/jobs", json=job_body(), headers=key)).status_code == 201
    before = ledger_state(db_url)
    response = await client.post("/jobs", json=job_body(test_path="other.spec.js"), headers=key)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert ledger_state(db_url) == before


async def test_concurrent_retries_with_one_key_create_one_job(db_url: str) -> None:
    responses: list[httpx.Response] = []
    async with api_client(db_url) as client:
        key = {"Idempotency-Key": "raced"}

        async def post() -> None:
            responses.append(await client.post("/jobs", json=job_body(), headers=key))

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(post)
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert ledger_state(db_url)[0] == 2  # one job: its JobSubmitted and JobGrouped


async def test_without_a_token_job_requests_get_401(db_url: str) -> None:
    async with api_client(db_url, local_mode=False) as client:
        for method, path in [
            ("POST", "/jobs"),
            ("GET", "/jobs"),
            ("GET", f"/jobs/{uuid.uuid4()}"),
            ("GET", "/groups"),
            ("GET", "/devices"),
            ("GET", f"/runs/{uuid.uuid4()}"),
        ]:
            response = await client.request(method, path, json=job_body())
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        forged = await client.get("/jobs", headers={"Authorization": "Bearer qgj_forged"})
        assert forged.status_code == 401
        assert (await client.get("/healthz")).status_code == 200
    assert ledger_state(db_url) == (0, 0)


async def test_another_orgs_token_gets_404_for_a_job(db_url: str) -> None:
    mine = {"Authorization": f"Bearer {create_token(db_url, 'qualgent')}"}
    theirs = {"Authorization": f"Bearer {create_token(db_url, 'rival')}"}
    async with api_client(db_url, local_mode=False) as client:
        body = {k: v for k, v in job_body().items() if k != "org_id"}
        job = (await client.post("/jobs", json=body, headers=mine)).json()
        assert job["org_id"] == "qualgent"
        job_id = job["job_id"]
        assert (await client.get(f"/jobs/{job_id}", headers=mine)).status_code == 200
        for method, path in [
            ("GET", f"/jobs/{job_id}"),
            ("GET", f"/status/{job_id}"),
            ("GET", f"/jobs/{job_id}/events"),
            ("POST", f"/jobs/{job_id}/cancel"),
        ]:
            response = await client.request(method, path, headers=theirs)
            assert response.status_code == 404, (method, path, response.text)
        assert (await client.get("/jobs", headers=theirs)).json()["jobs"] == []
        assert (await client.get(f"/jobs/{job_id}", headers=mine)).json()["status"] == "grouped"


async def test_a_token_cannot_submit_or_list_for_another_org(db_url: str) -> None:
    mine = {"Authorization": f"Bearer {create_token(db_url, 'qualgent')}"}
    async with api_client(db_url, local_mode=False) as client:
        submit = await client.post("/jobs", json=job_body(org_id="rival"), headers=mine)
        assert submit.status_code == 403
        assert submit.json()["error"]["field"] == "org_id"
        listing = await client.get("/jobs?org=rival", headers=mine)
        assert listing.status_code == 403
        assert listing.json()["error"]["field"] == "org"
    assert ledger_state(db_url) == (0, 0)


async def test_token_digests_not_tokens_are_stored(db_url: str) -> None:
    token = create_token(db_url, "qualgent", label="ci")
    assert token.startswith("qgj_")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select org_id, token_hash, label from api_tokens").fetchall()
    assert len(rows) == 1
    assert rows[0][0] == "qualgent" and rows[0][2] == "ci"
    assert token.encode() not in bytes(rows[0][1])


async def test_a_token_for_an_invalid_org_name_is_refused(db_url: str) -> None:
    with pytest.raises(ValueError, match="org_id"):
        create_token(db_url, "not an org")


async def test_a_job_is_grouped_in_the_transaction_that_submits_it(
    client: httpx.AsyncClient, db_url: str
) -> None:
    job_id = (await client.post("/jobs", json=job_body())).json()["job_id"]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select type, txid from events where stream_id = %s order by version", (job_id,)
        ).fetchall()
    assert [type_name for type_name, _ in rows] == ["JobSubmitted", "JobGrouped"]
    assert rows[0][1] == rows[1][1], "grouped in a transaction of its own"
    # The projector finds the job grouped already and leaves it so.
    await Projector(db_url).catch_up()
    assert ledger_state(db_url)[0] == 2


async def test_the_api_groups_by_its_configured_strategy(db_url: str) -> None:
    async with api_client(db_url, grouping="repo") as client:
        body = job_body(repo="github.com/qualgent/app")
        job_id = (await client.post("/jobs", json=body)).json()["job_id"]
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        grouped = (await read_stream(conn, uuid.UUID(job_id)))[1].event
    assert isinstance(grouped, JobGrouped)
    assert (grouped.strategy, grouped.group_key) == (
        "repo",
        "qualgent|device|repo=github.com/qualgent/app",
    )


def no_group_for_slow_tests(job: Any) -> str:
    """A custom strategy that fails on some jobs; named below by its import path."""
    if "slow" in job.test_path:
        raise RuntimeError("no group for slow tests")
    return "all"


async def test_a_job_the_strategy_fails_on_is_grouped_by_the_default_strategy(
    db_url: str,
) -> None:
    """A broken custom strategy must not leave a job where no device can claim it."""
    async with api_client(
        db_url, grouping="tests.test_api_submit:no_group_for_slow_tests"
    ) as client:
        slow = await client.post("/jobs", json=job_body(test_path="tests/slow.spec.js"))
        fast = await client.post("/jobs", json=job_body(test_path="tests/fast.spec.js"))
    assert (slow.status_code, slow.json()["status"]) == (201, "grouped")
    assert (fast.status_code, fast.json()["status"]) == (201, "grouped")
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        strategies = [
            (await read_stream(conn, uuid.UUID(response.json()["job_id"])))[1].event
            for response in (slow, fast)
        ]
    assert [grouped.strategy for grouped in strategies] == [  # type: ignore[union-attr]
        "app_version",
        "tests.test_api_submit:no_group_for_slow_tests",
    ]


def test_an_unknown_strategy_stops_the_api_from_being_built(db_url: str) -> None:
    with pytest.raises(UnknownStrategy, match="nonsense"):
        create_app(db_url, local_mode=True, grouping="nonsense")
