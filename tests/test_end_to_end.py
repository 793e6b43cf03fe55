"""The whole flow a user sees: the real CLI against the real stack.

uvicorn serves the API on a free port, a projector runs, and a ``qgjobd runner`` hosts
simulated slots (2 emulators and 1 device; no BrowserStack, so jobs for it wait). The
CLI runs as a subprocess, exactly as the original README shows it.
"""

from __future__ import annotations

import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.github_steps import run_workflow_steps, runner_env
from tests.support.api import REPO_ROOT
from tests.support.stack import qgjob, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(
    pg_server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The server's URL, with a projector and a runner behind it, for this module's tests."""
    runner = ["--name", "e2e", "--slots", "emulator:2,device:1"]
    runner += ["--simulated", "install_s=0.05,test_s=0.1"]
    logs = tmp_path_factory.mktemp("e2e")
    with running_stack(pg_server_url, template_database, logs, runner) as (base, _url):
        yield base


def test_the_readme_commands_submit_a_job_and_show_its_status(stack: str) -> None:
    submitted = qgjob(
        stack,
        "submit",
        "--org-id=qualgent",
        "--app-version-id=xyz123",
        "--test=tests/onboarding.spec.js",
        "--target=device",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    status = qgjob(stack, "status", f"--job-id={job_id}")
    assert status.returncode == 0, status.stderr
    assert job_id in status.stdout
    assert "tests/onboarding.spec.js" in status.stdout
    waited = qgjob(stack, "wait", f"--job-id={job_id}", "--timeout=60")
    assert waited.returncode == 0, waited.stderr


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
        case.get("name")
        for case in ET.parse(junit).getroot().iter("testcase")
        if case.find("failure") is not None
    ]
    assert failing == ["tests/checkout-fail.spec.js"]


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
