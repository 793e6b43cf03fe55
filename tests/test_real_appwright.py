"""With the real AppWright (examples/, installed with ``npm ci`` from its lock file) and no
Android SDK: a spec that exists only where the job was submitted, at a commit the device
host never saw, runs from the uploaded bundle, and ends in AppWright's own complaint about
the missing SDK, recorded as an infrastructure error."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import REPO_ROOT
from tests.support.stack import qgjob, running_stack

pytestmark = pytest.mark.slow

_MISSING = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
_SDK_VARIABLES = ("ANDROID_HOME", "ANDROID_SDK_ROOT")

NEW_SPEC = """import { test, expect } from "appwright";

test("the pull request's new screen opens", async ({ device }) => {
  await device.getByText("New screen").tap();
  await expect(device.getByText("Hello from the pull request")).toBeVisible();
});
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's example project with one more spec, committed."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "examples", checkout / "examples",
                    ignore=shutil.ignore_patterns("node_modules"))
    (checkout / "examples" / "tests" / "pull_request.spec.js").write_text(NEW_SPEC)
    (checkout / "app-debug.apk").write_bytes(b"PK\x03\x04 not a real app")
    git = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=checkout, check=True)
    subprocess.run([*git, "add", "."], cwd=checkout, check=True)
    subprocess.run([*git, "commit", "-qm", "a new screen"], cwd=checkout, check=True)
    return checkout


@pytest.fixture
def no_android_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SDK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def host(
    pg_server_url: str,
    template_database: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    no_android_sdk: None,
) -> Iterator[str]:
    """The API, a projector and a runner whose own project folder has no specs; its
    cache (the npm ci of the example's lock file) lives as long as the session."""
    configured = tmp_path / "host-project"
    configured.mkdir()
    runner = ["--name", "lab", "--slots", "emulator/android:1", "--executor", "appwright"]
    runner += ["--appwright-project", str(configured), "--work-dir", str(tmp_path / "runs")]
    runner += ["--cache-dir", str(_session_cache(tmp_path_factory)), "--drain-timeout", "2"]
    with running_stack(pg_server_url, template_database, tmp_path, runner) as (base, _url):
        yield base


def _session_cache(factory: pytest.TempPathFactory) -> Path:
    cache = factory.getbasetemp() / "device-host-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed")
def test_a_spec_only_in_the_submitted_bundle_runs_and_fails_on_the_missing_sdk(
    checkout: Path, host: str
) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    submitted = qgjob(
        host,
        "submit",
        "--json",
        "--org-id=qualgent",
        "--app-version-id=pr-1",
        "--test=examples/tests/pull_request.spec.js",
        "--target=emulator",
        "--build=app-debug.apk",
        f"--commit={commit}",
        cwd=checkout,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]

    waited = qgjob(host, "wait", f"--job-id={job_id}", "--timeout=240", cwd=checkout)
    shown = qgjob(host, "status", "--json", f"--job-id={job_id}", cwd=checkout)
    events = qgjob(host, "events", f"--job-id={job_id}", cwd=checkout)

    job = json.loads(shown.stdout)
    assert waited.returncode != 0
    assert (job["status"], job["failure_kind"]) == ("error", "infrastructure"), events.stdout
    assert job["test_path"] == "tests/pull_request.spec.js"
    assert "spec file not found" not in job["last_error"]
    assert "The ANDROID_HOME environment variable is not set" in events.stdout, events.stdout
    # What ran, as `qgjob events` shows it: the uploaded bundle and build, and the slot.
    started = [line for line in events.stdout.splitlines() if " JobStarted " in line]
    assert started and all(
        "bundle=sha256:" in line and "build=sha256:" in line and "device=emulator-android-1"
        in line and "agent_id=lab:" in line
        for line in started
    )
