"""The whole flow a user sees: the real CLI against the real stack.

uvicorn serves the API on a free port, a projector runs, and a ``qgjobd runner`` hosts
simulated slots (2 emulators and 1 device; no BrowserStack, so jobs for it wait). The
CLI runs as a subprocess, exactly as the original README shows it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.github_steps import run_workflow_steps, runner_env
from tests.support.api import REPO_ROOT
from tests.support.stack import qgjob, runner_process, running_stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(
    pg_server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The API's URL and the database's, with a projector and a runner behind them."""
    runner = ["--name", "e2e", "--slots", "emulator/android:2,device/android:1"]
    runner += ["--drain-timeout", "2"]
    runner += ["--simulated", "install_s=0.05,test_s=0.1"]
    logs = tmp_path_factory.mktemp("e2e")
    with running_stack(pg_server_url, template_database, logs, runner) as urls:
        yield urls


@pytest.fixture(scope="module")
def stack(deployed: tuple[str, str]) -> str:
    return deployed[0]


@pytest.fixture(scope="module")
def e2e_db(deployed: tuple[str, str]) -> str:
    return deployed[1]


def readme_quick_start() -> list[list[str]]:
    """The CLI commands of the README's quick start, as arguments after ``qgjob.py``."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("submit a test and follow it:", 1)[1].split("```console", 1)[1]
    lines = block.split("```", 1)[0].strip().splitlines()
    # The placeholder is what a reader replaces; shlex would split it into words.
    lines = [line.replace("<id printed above>", "JOB_ID") for line in lines]
    return [shlex.split(line.removeprefix("$ python3 qgjob.py ")) for line in lines]


def test_the_readme_quick_start_commands_work(stack: str, tmp_path: Path) -> None:
    """Submit, status, then the suite with --wait and --junit, exactly as the README has
    them (the report written to a temporary directory instead of the checkout)."""
    submit, status, suite = readme_quick_start()
    submitted = qgjob(stack, *submit)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    shown = qgjob(stack, *(arg.replace("JOB_ID", job_id) for arg in status))
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout
    assert "tests/onboarding.spec.js" in shown.stdout
    report = tmp_path / "report.xml"
    waited = qgjob(stack, *(str(report) if arg == "report.xml" else arg for arg in suite))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert ET.parse(report).getroot().get("failures") == "0"


def test_waiting_on_a_suite_that_passes_exits_0(stack: str, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=app-pass",
        "--test=tests/login.spec.js",
        "--test=tests/cart.spec.js",
        "--test=tests/search.spec.js",
        "--target=emulator",
        "--wait",
        "--timeout=60",
        f"--junit={junit}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")


def test_waiting_on_a_suite_with_a_failing_test_exits_1_and_names_it(
    stack: str, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    result = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=app-fail",
        "--test=tests/login.spec.js",
        "--test=tests/checkout-fail.spec.js",
        "--target=emulator",
        "--wait",
        "--timeout=60",
        f"--junit={junit}",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    failing = [
        (case.get("file"), case.get("name"))
        for case in ET.parse(junit).getroot().iter("testcase")
        if case.find("failure") is not None
    ]
    assert failing == [("tests/checkout-fail.spec.js", "simulated test")]


def test_waiting_longer_than_the_timeout_exits_3(stack: str) -> None:
    # No slot serves BrowserStack here, so the job waits in the queue.
    result = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=app-wait",
        "--test=tests/slow.spec.js",
        "--target=browserstack",
        "--wait",
        "--timeout=2",
    )
    assert result.returncode == 3, result.stdout + result.stderr


def _submit_run(stack: str, *args: str) -> str:
    """Submit a suite without waiting; return its run id."""
    submitted = qgjob(stack, "submit", "--org-id=qualgent", *args)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.splitlines()[0]


def _waited(stack: str, run_id: str) -> tuple[int, dict[str, Any]]:
    waited = qgjob(stack, "wait", f"--run-id={run_id}", "--timeout=90", "--json")
    return waited.returncode, json.loads(waited.stdout)


def test_an_infrastructure_error_after_its_retries_exits_5_and_a_test_failure_1(
    stack: str,
) -> None:
    """CI can retry the pipeline on 5 (our device broke) and fail the build on 1 (your
    test broke); a run with both is a test failure."""
    # The simulated executor fails any spec whose path says "infra" as a device would.
    infra = _submit_run(
        stack,
        "--app-version-id=app-infra",
        "--test=tests/login.spec.js",
        "--test=tests/device-infra.spec.js",
    )
    both = _submit_run(
        stack,
        "--app-version-id=app-both",
        "--test=tests/payment-infra.spec.js",
        "--test=tests/checkout-fail.spec.js",
    )
    code, view = _waited(stack, infra)
    assert code == 5, view
    jobs = {job["test_path"]: job for job in view["jobs"]}
    assert jobs["tests/login.spec.js"]["status"] == "passed"
    errored = jobs["tests/device-infra.spec.js"]
    assert (errored["status"], errored["failure_kind"]) == ("error", "infrastructure")
    assert errored["attempts"] == 3, "retried up to the runner's limit first"
    code, view = _waited(stack, both)
    assert code == 1, view
    assert sorted(job["status"] for job in view["jobs"]) == ["error", "failed"]


def _ledger_jobs(url: str, app_version_id: str) -> dict[str, list[tuple[str, Any]]]:
    """Each job of the app version: its events' types and data, in order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            select e.stream_id::text, e.type, e.data
            from events e
            where e.stream_id in (
                select stream_id from events
                where type = 'JobSubmitted' and data ->> 'app_version_id' = %s
            )
            order by e.stream_id, e.version
            """,
            (app_version_id,),
        ).fetchall()
    jobs: dict[str, list[tuple[str, Any]]] = {}
    for job_id, type_name, data in rows:
        jobs.setdefault(job_id, []).append((type_name, data))
    return jobs


def test_sigterm_to_submit_wait_cancels_its_queued_and_running_jobs(
    stack: str, e2e_db: str, tmp_path: Path
) -> None:
    """As GitHub does when a workflow is cancelled: the waiting CLI gets SIGTERM, cancels
    its run (the running job and the one still waiting), and exits 130."""
    # A slot whose tests take a minute: one job runs while the other waits its turn. Two
    # slots, as a BrowserStack job of another test may be waiting for one.
    slow = ["--name", "e2e-slow", "--slots", "browserstack:2", "--drain-timeout", "2"]
    slow += ["--simulated", "install_s=0,test_s=60"]
    with runner_process(e2e_db, slow, tmp_path / "slow.log"):
        waiting = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "qgjob.py"),
                "submit",
                "--org-id=qualgent",
                "--app-version-id=app-sigterm",
                "--test=tests/login.spec.js",
                "--test=tests/cart.spec.js",
                "--target=browserstack",
                "--wait",
            ],
            env={**os.environ, "QGJOB_SERVER": stack},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def one_running() -> bool:
            jobs = _ledger_jobs(e2e_db, "app-sigterm")
            started = [j for j in jobs.values() if any(t == "JobStarted" for t, _ in j)]
            return len(jobs) == 2 and len(started) == 1

        wait_until(one_running, timeout=30, what="one job of the run to be running")
        waiting.send_signal(signal.SIGTERM)
        _, stderr = waiting.communicate(timeout=30)

    assert waiting.returncode == 130, stderr
    assert "interrupted: cancelled run" in stderr
    jobs = _ledger_jobs(e2e_db, "app-sigterm")
    ends = sorted(("JobStarted" in dict(events), events[-1][0]) for events in jobs.values())
    assert ends == [(False, "JobCancelled"), (True, "JobCancelled")]
    assert all(
        events[-1][1]["reason"] == "the qgjob command waiting for it was interrupted"
        for events in jobs.values()
    )


def test_a_newer_run_supersedes_an_older_one_with_the_same_key(stack: str) -> None:
    # No slot serves BrowserStack here, so the older run's jobs are still waiting.
    older = _submit_run(
        stack,
        "--app-version-id=app-super",
        "--test=tests/login.spec.js",
        "--target=browserstack",
        "--supersede=refs/heads/main",
    )
    wait_until(
        lambda: older in qgjob(stack, "list", f"--run-id={older}", "--json").stdout,
        timeout=10,
        what="the older run in the projection",
    )
    newer = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=app-super",
        "--test=tests/cart.spec.js",
        "--target=browserstack",
        "--supersede=refs/heads/main",
    )
    assert newer.returncode == 0, newer.stderr
    newer_run = newer.stdout.splitlines()[0]
    assert f"superseded {older}" in newer.stderr

    code, view = _waited(stack, older)
    assert code == 1
    assert [job["status"] for job in view["jobs"]] == ["cancelled"]
    assert view["jobs"][0]["last_error"] == f"superseded by run {newer_run} (refs/heads/main)"

    cancelled = qgjob(stack, "cancel", f"--run-id={newer_run}", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert [job["status"] for job in json.loads(cancelled.stdout)["jobs"]] == ["cancelled"]


def test_rerun_failed_submits_only_the_failed_jobs_as_a_linked_run(stack: str) -> None:
    first = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=app-rerun",
        "--test=tests/login.spec.js",
        "--test=tests/checkout-fail.spec.js",
        "--wait",
        "--timeout=60",
        "--json",
    )
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]

    rerun = qgjob(stack, "rerun", f"--run-id={run_id}", "--failed", "--wait", "--json")

    assert rerun.returncode == 1, rerun.stderr
    view = json.loads(rerun.stdout)
    assert view["run_id"] != run_id and view["rerun_of"] == run_id
    assert [(job["test_path"], job["app_version_id"]) for job in view["jobs"]] == [
        ("tests/checkout-fail.spec.js", "app-rerun")
    ]


def _checkout(destination: Path) -> Path:
    """A copy of what the workflow reads from the repository, as actions/checkout leaves it."""
    destination.mkdir()
    for part in ("qgjob.py", "scripts", "examples", ".github"):
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, destination / part)
        else:
            shutil.copy(source, destination / part)
    return destination


def _run_appwright_workflow(stack: str, workspace: Path) -> tuple[list[int], str]:
    env = runner_env(workspace.parent / "runner")
    exprs = {
        "vars.QGJOB_SERVER": stack,
        "vars.QGJOB_ORG_ID": "qualgent",
        "github.sha": f"sha-{uuid.uuid4().hex[:8]}",
        "github.repository": "qualgent/shop",
        "github.repository_owner": "qualgent",
    }
    results = run_workflow_steps(
        workspace / ".github" / "workflows" / "appwright.yml", exprs, env, workspace, timeout=180
    )
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    return [result.returncode for result in results], summary


def test_the_appwright_workflow_passes_against_a_real_stack(stack: str, tmp_path: Path) -> None:
    workspace = _checkout(tmp_path / "workspace")
    exit_codes, summary = _run_appwright_workflow(stack, workspace)
    assert exit_codes == [0, 0], summary
    specs = sorted(p.name for p in (workspace / "examples" / "tests").glob("*.spec.js"))
    assert len(specs) >= 3
    for spec in specs:
        assert spec in summary
    assert (workspace / "qgjob-junit.xml").exists()


def test_the_appwright_workflow_fails_the_build_when_a_spec_fails(
    stack: str, tmp_path: Path
) -> None:
    workspace = _checkout(tmp_path / "workspace")
    # The simulated executor fails any spec whose path says "fail".
    failing = workspace / "examples" / "tests" / "payment-fail.spec.js"
    shutil.copy(workspace / "examples" / "tests" / "login.spec.js", failing)
    exit_codes, summary = _run_appwright_workflow(stack, workspace)
    submit, table = exit_codes
    assert submit == 1, summary
    assert table == 0, "the results table is still written when the suite failed"
    assert "payment-fail.spec.js" in summary
