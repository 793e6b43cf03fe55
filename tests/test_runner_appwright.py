"""Agents running the AppWright executor against the fake ``npx`` (tests/fake_appwright/npx)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import qgjob
from ledger.decisions import JobStatus, fold
from ledger.events import (
    FailureKind,
    JobCancelled,
    JobFailed,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    JobTimedOut,
    Target,
    TimeoutKind,
)
from ledger.store import append, read_stream
from tests.support.api import REPO_ROOT, api_client
from tests.support.factories import metadata
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FAKE_NPX = Path(__file__).parent / "fake_appwright" / "npx"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PATH", f"{FAKE_NPX.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPWRIGHT_RECORD", str(tmp_path / "record.jsonl"))
    project_dir = tmp_path / "project"
    (project_dir / "tests").mkdir(parents=True)
    (project_dir / "builds").mkdir()
    for version in ("1.0", "2.0", "3.0", "4.0", "5.0"):
        (project_dir / "builds" / f"{version}.apk").write_bytes(b"apk")
    specs = {"ok": "", "ok2": "", "fail": "FAIL", "crash": "CRASH", "hang": "HANG"}
    for name, body in specs.items():
        (project_dir / "tests" / f"{name}.spec.ts").write_text(f"// {body}\n", encoding="utf-8")
    yield project_dir
    for hang in records(tmp_path / "record.jsonl", "hang"):
        for pid in (hang["pid"], hang["child_pid"]):
            if running(pid):
                os.kill(pid, 9)


def records(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def appwright_agent(project_dir: Path, **overrides: Any) -> Any:
    return agent_config(
        "lab",
        "emulator:2",
        executor="appwright",
        appwright={
            "project_dir": str(project_dir),
            "build_template": "builds/{app_version_id}.apk",
            "work_dir": str(project_dir.parent / "runs"),
            "stop_grace_s": 2.0,
        },
        **overrides,
    )


def job(spec: str, app: str, **fields: Any) -> JobSubmitted:
    return JobSubmitted(
        org_id="qualgent",
        app_version_id=app,
        test_path=f"tests/{spec}.spec.ts",
        target=Target.EMULATOR,
        **fields,
    )


async def test_passed_failed_infrastructure_errors_and_timeouts_are_recorded_as_such(
    project: Path,
    db_url: str,
) -> None:
    """Each AppWright outcome becomes the right events; infrastructure errors (a crash,
    a build that is not there) are retried up to the runner's limit, test failures not."""
    async with pipeline(db_url, appwright_agent(project)):
        ok, failed, crashed, hung, no_build = await submit(
            db_url,
            [
                job("ok", "1.0"),
                job("fail", "2.0"),
                job("crash", "3.0"),
                job("hang", "4.0", timeout_s=1.0),
                job("ok", "9.9"),
            ],
        )
        await wait_all_ended(db_url, [ok, failed, crashed, hung, no_build], timeout=40)

    streams = await histories(db_url, [ok, failed, crashed, hung, no_build])
    states = check_histories(streams)
    events = {job_id: [r.event for r in stream] for job_id, stream in streams.items()}

    assert states[ok].status == JobStatus.PASSED
    passed = events[ok][-1]
    assert isinstance(passed, JobPassed) and "device ready" in passed.output

    assert states[failed].status == JobStatus.FAILED and states[failed].attempt == 1
    failure = events[failed][-1]
    assert isinstance(failure, JobFailed) and failure.kind == FailureKind.TEST
    assert "toBeVisible() failed" in failure.reason

    for job_id, why in ((crashed, "wrote no report"), (no_build, "build not found")):
        assert states[job_id].status == JobStatus.ERROR, "an infrastructure error, not a test's"
        assert states[job_id].attempt == 3, "retried up to the infrastructure limit"
        failures = [e for e in events[job_id] if isinstance(e, JobFailed)]
        assert [f.kind for f in failures] == [FailureKind.INFRASTRUCTURE] * 3
        assert all(why in f.reason for f in failures)
        assert sum(isinstance(e, JobRetryScheduled) for e in events[job_id]) == 2
    assert not any(isinstance(e, JobStarted) for e in events[no_build]), "failed fast"

    assert states[hung].status == JobStatus.TIMED_OUT
    timed_out = events[hung][-1]
    assert isinstance(timed_out, JobTimedOut) and timed_out.kind == TimeoutKind.RUN
    assert "1 s limit" in timed_out.reason


async def test_cancelling_a_running_job_kills_its_process_within_two_seconds(
    project: Path, db_url: str
) -> None:
    """The cancelled job's AppWright run is killed, nothing more is recorded for it, and
    the batch's other job is handed back and runs again."""
    agent = appwright_agent(project, cancel_poll_s=0.5)
    record = project.parent / "record.jsonl"
    async with (
        pipeline(db_url, agent),
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        hung, other = await submit(db_url, [job("hang", "5.0"), job("ok2", "5.0")])

        async def hanging() -> list[dict[str, Any]]:
            state = fold(r.event for r in await read_stream(conn, hung))
            return records(record, "hang") if state.status == JobStatus.RUNNING else []

        [hang] = await async_wait_until(hanging, timeout=20, what="the run to hang")
        state = fold(r.event for r in await read_stream(conn, hung))
        await append(conn, hung, state.version, [JobCancelled(attempt=1)], metadata())
        cancelled_at = time.monotonic()

        async def killed() -> bool:
            return not running(hang["pid"]) and not running(hang["child_pid"])

        await async_wait_until(killed, timeout=5, what="the AppWright run to be killed")
        assert time.monotonic() - cancelled_at < 2.0
        await wait_all_ended(db_url, [hung, other], timeout=20)

    streams = await histories(db_url, [hung, other])
    states = check_histories(streams)
    assert states[hung].status == JobStatus.CANCELLED
    assert isinstance(streams[hung][-1].event, JobCancelled)
    assert states[other].status == JobStatus.PASSED
    retry = next(r.event for r in streams[other] if isinstance(r.event, JobRetryScheduled))
    assert retry.handed_back
    assert retry.reason == (
        f"handed back: job {hung} of the same batch ended elsewhere (cancelled, or handed on)"
    )


RECORDED = Path(__file__).parent / "fixtures" / "playwright-1.46"


async def test_a_real_playwright_report_gives_a_testcase_per_test_and_one_annotation(
    project: Path, db_url: str, tmp_path: Path
) -> None:
    """A spec of 3 tests, 1 failing, as Playwright 1.46 reported it: the API shows the 3
    tests, the JUnit report has 3 testcases, and GitHub gets one ::error at file:line."""
    original = (RECORDED / "checkout.spec.js").read_text(encoding="utf-8")
    spec = project / "tests" / "checkout.spec.js"
    spec.write_text(f"// REPLAY checkout-report.json\n{original}", encoding="utf-8")
    submitted = JobSubmitted(
        org_id="qualgent",
        app_version_id="1.0",
        test_path="tests/checkout.spec.js",
        target=Target.EMULATOR,
    )
    async with pipeline(db_url, appwright_agent(project)), api_client(db_url) as api:
        [job_id] = await submit(db_url, [submitted])

        async def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
            return job if job["status"] == "failed" and job["tests"] else None

        job = await async_wait_until(finished, timeout=30, what="the job to fail")

    assert [(t["title_path"], t["status"]) for t in job["tests"]] == [
        (["checkout", "adds an item to the cart"], "passed"),
        (["checkout", "applies a discount code"], "failed"),
        (["checkout", "shows the order summary"], "passed"),
    ]
    assert job["tests"][1]["error"]["file"] == "tests/checkout.spec.js"
    assert job["tests"][1]["error"]["line"] == 11

    view = {"run_id": None, "done": True, "counts": {"failed": 1}, "jobs": [job]}
    junit = ET.fromstring(qgjob.junit_xml(view))
    cases = list(junit.iter("testcase"))
    assert [case.get("name") for case in cases] == [
        "checkout > adds an item to the cart",
        "checkout > applies a discount code",
        "checkout > shows the order summary",
    ]
    assert (junit.get("tests"), junit.get("failures"), junit.get("errors")) == ("3", "1", "0")
    failure = cases[1].find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "Error: expect(received).toBe(expected) // Object.is equality"
    assert "at tests/checkout.spec.js:11" in failure.text

    result = tmp_path / "result.json"
    result.write_text(json.dumps(view), encoding="utf-8")
    summary = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "step_summary.py"), str(result)],
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")},
        capture_output=True,
        text=True,
        check=True,
    )
    annotations = [line for line in summary.stdout.splitlines() if line.startswith("::")]
    assert annotations == [
        "::error file=tests/checkout.spec.js,line=11,title=checkout > applies a discount code"
        "::Error: expect(received).toBe(expected) // Object.is equality%0A%0AExpected: 80"
        "%0AReceived: 90"
    ]
