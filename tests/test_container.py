"""The image: `docker run -p 8000:8000 qgjob-backend` serves the CLI and stops on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.support.api import REPO_ROOT, free_port
from tests.support.podman import podman
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

# What `docker stop` allows before it kills: a clean stop must fit in it.
STOP_GRACE_S = 10


def test_the_image_runs_up_serves_a_suite_and_stops_cleanly_on_sigterm(qgjob_image: str) -> None:
    name = f"qgjob-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000", qgjob_image)
    try:
        wait_until(
            lambda: "Uvicorn running" in _logs(name), timeout=60, what="the API in the container"
        )
        assert "in local mode" in _logs(name)
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        submitted = subprocess.run(
            [
                sys.executable, "qgjob.py", "--server", f"http://127.0.0.1:{port}",
                "submit", "--org-id=qualgent", "--app-version-id=xyz123",
                "--test=tests/onboarding.spec.js", "--test=tests/login.spec.js",
                "--target=emulator", "--wait", "--timeout=60",
            ],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
        )
        # The default command simulates devices on which a test fails now and then (5%):
        # exit 1 with a failed test is the suite run to its end just as much as exit 0.
        assert submitted.returncode in (0, 1), submitted.stdout + submitted.stderr + _logs(name)
        assert "(2/2 done)" in submitted.stdout

        # SIGTERM, then SIGKILL once the grace is over: exit code 0 means it stopped itself.
        podman("stop", "--time", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 30)
        state = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "0", _logs(name)
        assert "projector main stopped" in _logs(name)
    finally:
        podman("rm", "--force", name, check=False)


def _logs(name: str) -> str:
    done = podman("logs", name, check=False)
    return done.stdout + done.stderr


def test_a_role_still_waiting_for_its_database_stops_on_sigterm(qgjob_image: str) -> None:
    name = f"qgjob-test-{uuid.uuid4().hex[:8]}"
    nothing_listens = "postgresql://qgjob@127.0.0.1:1/qgjob"
    podman(
        "run", "--detach", "--name", name, "--env", f"QGJOB_DATABASE_URL={nothing_listens}",
        qgjob_image, "runner", "--executor=simulated", "--slots=emulator:1",
    )
    try:
        wait_until(
            lambda: "waiting for the database" in _logs(name), timeout=30, what="the wait"
        )
        podman("stop", "--time", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 30)
        state = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "130", f"stopped with {state}, not by its own SIGTERM handling"
    finally:
        podman("rm", "--force", name, check=False)
