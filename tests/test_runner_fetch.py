"""Jobs that name an uploaded test bundle and build run from them, fetched by digest on the
device host; BrowserStack gets each organisation's build once (the fake ``npx`` of
tests/fake_appwright and a fake BrowserStack upload endpoint stand in for the real ones)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ledger.blobs import BlobKind, PostgresBlobStore, reference
from ledger.decisions import JobStatus
from ledger.events import JobFailed, JobStarted, JobSubmitted, Target
from runner import ClaimPolicy
from runner.devices import device_id_for
from tests.support.blobs import sha256, tar_gz
from tests.support.browserstack import CREDENTIALS, FakeBrowserStack, fake_browserstack
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FAKE_NPX = Path(__file__).parent / "fake_appwright" / "npx"
BUILD = b"\x7fAPK build of 1.0"
#: A lock file without dependencies: npm ci installs nothing, offline, in a moment.
PACKAGE = {"name": "suite", "version": "1.0.0", "private": True}
LOCK = {
    "name": "suite",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {"": {"name": "suite", "version": "1.0.0"}},
}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A device host whose configured project holds no specs at all."""
    monkeypatch.setenv("PATH", f"{FAKE_NPX.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPWRIGHT_RECORD", str(tmp_path / "record.jsonl"))
    (tmp_path / "configured").mkdir()
    yield tmp_path


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[PostgresBlobStore]:
    pool = AsyncConnectionPool(
        db_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    try:
        yield PostgresBlobStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def browserstack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBrowserStack]:
    monkeypatch.setenv("BROWSERSTACK_USERNAME", CREDENTIALS[0])
    monkeypatch.setenv("BROWSERSTACK_ACCESS_KEY", CREDENTIALS[1])
    with fake_browserstack() as fake:
        yield fake


async def _put(store: PostgresBlobStore, org: str, data: bytes, kind: BlobKind, name: str) -> str:
    async def once() -> AsyncIterator[bytes]:
        yield data

    await store.put(org, sha256(data), once(), kind=kind, name=name, max_size=1 << 30)
    return reference(sha256(data))


def _bundle(specs: dict[str, str]) -> bytes:
    entries = [
        ("package.json", b"0", json.dumps(PACKAGE).encode()),
        ("package-lock.json", b"0", json.dumps(LOCK).encode()),
    ]
    entries += [(f"tests/{name}", b"0", body.encode()) for name, body in specs.items()]
    return tar_gz(entries)


def _agent(host: Path, name: str, slots: str, **overrides: Any) -> Any:
    return agent_config(
        name,
        slots,
        executor="appwright",
        appwright={
            "project_dir": str(host / "configured"),
            "work_dir": str(host / "runs"),
            "stop_grace_s": 2.0,
            **overrides.pop("appwright", {}),
        },
        cache_dir=str(host / "cache"),
        **overrides,
    )


def _job(org: str, spec: str, *, bundle: str, build: str, target: Target) -> JobSubmitted:
    return JobSubmitted(
        org_id=org,
        app_version_id="1.0",
        test_path=f"tests/{spec}",
        target=target,
        bundle=bundle,
        build=build,
    )


def _invocations(host: Path) -> list[dict[str, Any]]:
    record = host / "record.jsonl"
    lines = record.read_text().splitlines() if record.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "invoked"]


async def _started(db_url: str, job_id: UUID) -> list[JobStarted]:
    stream = (await histories(db_url, [job_id]))[job_id]
    return [r.event for r in stream if isinstance(r.event, JobStarted)]


async def test_a_spec_only_in_the_bundle_runs_from_it_and_its_start_says_what_ran(
    host: Path, db_url: str, store: PostgresBlobStore
) -> None:
    bundle = await _put(
        store, "qualgent", _bundle({"new.spec.ts": "// added in a pull request\n"}),
        BlobKind.BUNDLE, "bundle.tar.gz",
    )
    build = await _put(store, "qualgent", BUILD, BlobKind.BUILD, "app-release.apk")
    agent = _agent(host, "lab", "emulator/android:1")
    async with pipeline(db_url, agent):
        (job_id,) = await submit(
            db_url, [_job("qualgent", "new.spec.ts", bundle=bundle, build=build,
                          target=Target.EMULATOR)]
        )
        await wait_all_ended(db_url, [job_id], timeout=40)

    assert check_histories(await histories(db_url, [job_id]))[job_id].status == JobStatus.PASSED
    (invoked,) = _invocations(host)
    bundle_dir = host / "cache" / "bundles" / bundle.removeprefix("sha256:")
    assert Path(invoked["cwd"]) == bundle_dir
    assert (bundle_dir / "node_modules").is_symlink()
    config = Path(invoked["argv"][invoked["argv"].index("--config") + 1]).read_text()
    fetched = host / "cache" / "builds" / build.removeprefix("sha256:") / "app-release.apk"
    assert json.dumps(str(fetched)) in config and fetched.read_bytes() == BUILD
    (started,) = await _started(db_url, job_id)
    assert (started.bundle, started.build) == (bundle, build)
    assert started.agent_id is not None and started.agent_id.startswith("lab:")
    assert started.device_id == device_id_for("lab", "emulator-android-1")
    assert started.device == "emulator-android-1 (emulator, android)"


async def test_a_build_that_arrives_corrupt_fails_as_an_infrastructure_error_unrun(
    host: Path, db_url: str, store: PostgresBlobStore
) -> None:
    bundle = await _put(store, "qualgent", _bundle({"a.spec.ts": ""}), BlobKind.BUNDLE, "b")
    build = await _put(store, "qualgent", BUILD, BlobKind.BUILD, "app.apk")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update blob_chunks set data = 'tampered'::bytea")
    async with pipeline(db_url, _agent(host, "lab", "emulator/android:1")):
        (job_id,) = await submit(
            db_url, [_job("qualgent", "a.spec.ts", bundle=bundle, build=build,
                          target=Target.EMULATOR)]
        )
        await wait_all_ended(db_url, [job_id], timeout=40)

    stream = (await histories(db_url, [job_id]))[job_id]
    assert check_histories({job_id: stream})[job_id].status == JobStatus.ERROR
    failures = [r.event for r in stream if isinstance(r.event, JobFailed)]
    assert failures and all("nothing was run from it" in f.reason for f in failures)
    assert not any(isinstance(r.event, JobStarted) for r in stream)
    assert _invocations(host) == []


async def test_browserstack_gets_each_organisations_build_once_across_batches_and_hosts(
    host: Path, db_url: str, store: PostgresBlobStore, browserstack: FakeBrowserStack
) -> None:
    """Batches of one build on two agents' BrowserStack slots, one after the other and
    at once, upload it once per organisation: a second org with the same app version and
    the same build bytes gets its own upload, never the first org's."""
    specs = {f"t{i}.spec.ts": "" for i in range(4)}
    one_per_batch = {
        "policy": ClaimPolicy(min_batch=1, max_batch=1),
        "appwright": {"browserstack_upload_url": browserstack.upload_url},
    }
    orgs = {}
    for org in ("acme", "globex"):
        orgs[org] = (
            await _put(store, org, _bundle(specs), BlobKind.BUNDLE, "bundle.tar.gz"),
            await _put(store, org, BUILD, BlobKind.BUILD, "app.apk"),
        )

    def jobs(org: str, *names: str) -> list[JobSubmitted]:
        bundle, build = orgs[org]
        return [
            _job(org, name, bundle=bundle, build=build, target=Target.BROWSERSTACK)
            for name in names
        ]

    ran: dict[str, list[UUID]] = {}
    for name, spec in (("host-1", "t0.spec.ts"), ("host-2", "t1.spec.ts")):
        async with pipeline(db_url, _agent(host, name, "browserstack/android:1", **one_per_batch)):
            ran[name] = await submit(db_url, jobs("acme", spec))
            await wait_all_ended(db_url, ran[name], timeout=40)
    assert len(browserstack.uploads) == 1
    agents = [_agent(host, n, "browserstack/android:2", **one_per_batch) for n in ("h1", "h2")]
    async with pipeline(db_url, *agents):
        ran["both"] = await submit(db_url, jobs("globex", *specs))
        await wait_all_ended(db_url, ran["both"], timeout=60)

    acme_upload, globex_upload = browserstack.uploads
    assert acme_upload.content == globex_upload.content == BUILD
    all_ids = [job_id for ids in ran.values() for job_id in ids]
    states = check_histories(await histories(db_url, all_ids))
    assert {state.status for state in states.values()} == {JobStatus.PASSED}
    builds = {job_id: (await _started(db_url, job_id))[0].build for job_id in all_ids}
    assert {builds[i] for i in ran["host-1"] + ran["host-2"]} == {acme_upload.app_url}
    assert {builds[i] for i in ran["both"]} == {globex_upload.app_url}
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute(
            "select metadata ->> 'org_id', data from events where type = 'BuildUploaded'"
            " order by position"
        ).fetchall()
    assert [(org, data["reference"], data["build"]) for org, data in recorded] == [
        ("acme", acme_upload.app_url, orgs["acme"][1]),
        ("globex", globex_upload.app_url, orgs["globex"][1]),
    ]
    assert all(data["expires_at"] for _, data in recorded)


async def test_an_expired_browserstack_upload_is_made_again(
    host: Path, db_url: str, store: PostgresBlobStore, browserstack: FakeBrowserStack
) -> None:
    bundle = await _put(store, "acme", _bundle({"a.spec.ts": ""}), BlobKind.BUNDLE, "b")
    build = await _put(store, "acme", BUILD, BlobKind.BUILD, "app.apk")
    agent = _agent(
        host,
        "lab",
        "browserstack/android:1",
        upload_lifetime_s=0.001,
        appwright={"browserstack_upload_url": browserstack.upload_url},
    )
    async with pipeline(db_url, agent):
        for _ in range(2):
            ids = await submit(
                db_url, [_job("acme", "a.spec.ts", bundle=bundle, build=build,
                              target=Target.BROWSERSTACK)]
            )
            await wait_all_ended(db_url, ids, timeout=40)

    assert len(browserstack.uploads) == 2
