"""`qgjobd up` (what `make up` runs): everything in one command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api import REPO_ROOT, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def _cli(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "qgjob.py", "--server", server, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_up_runs_a_suite_to_the_end_and_ctrl_c_stops_everything(
    db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "qgjobd.py",
                "up",
                "--port",
                str(port),
                "--simulated",
                "install_s=0.05,test_s=0.05",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "QGJOB_DATABASE_URL": db_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Uvicorn running" in log_path.read_text(), timeout=30, what="the API")
        submitted = _cli(
            server,
            "submit",
            "--org-id=qualgent",
            "--app-version-id=xyz123",
            "--test=tests/onboarding.spec.js",
            "--test=tests/login.spec.js",
            "--target=browserstack",
            "--wait",
            "--timeout=60",
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "2 passed" in submitted.stdout + submitted.stderr
    finally:
        up.send_signal(signal.SIGINT)
        exit_code = up.wait(timeout=30)
    log = log_path.read_text()
    assert exit_code == 0, log
    assert "local mode" in log and "SIMULATED" in log
    for transition in ("JobSubmitted", "JobGrouped", "JobAssigned", "JobStarted", "JobPassed"):
        assert log.count(transition) == 2, f"one {transition} line per job expected:\n{log}"
    assert "projector main stopped" in log
