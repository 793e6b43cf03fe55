"""compose.yaml: PostgreSQL, a migrate step, two API replicas behind one port, a projector
and two device agents run a suite submitted with the real CLI, tokens on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import REPO_ROOT, free_port
from tests.support.podman import CONTAINERS_DIR, build_image, podman, podman_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

API_REPLICAS = ("api-1", "api-2")
RUNNERS = ("runner-1", "runner-2")


class Stack:
    def __init__(self, project: str, port: int) -> None:
        self.project = project
        self.server = f"http://127.0.0.1:{port}"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self, service: str) -> str:
        done = podman("logs", self.container(service), check=False)
        return done.stdout + done.stderr

    def cli(self, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
        env = {name: value for name, value in os.environ.items() if name != "QGJOB_TOKEN"}
        if token is not None:
            env["QGJOB_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "qgjob.py", "--server", self.server, *args],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
        )


def _compose(env: dict[str, str], project: str, *args: str) -> None:
    # --in-pod false: one network with a DNS name per service, as Docker Compose has.
    command = [str(Path(sys.executable).with_name("podman-compose")), "--in-pod", "false"]
    done = subprocess.run(
        [*command, "--project-name", project, "--file", str(REPO_ROOT / "compose.yaml"), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"podman-compose {' '.join(args)}:\n{done.stdout}{done.stderr}"


@pytest.fixture
def stack(qgjob_image: str) -> Iterator[Stack]:
    # Stand-ins for the postgres and nginx images, which no registry here serves.
    images = {
        f"QGJOB_{name.upper()}_IMAGE": build_image(
            f"localhost/qgjob-test-{name}",
            context=CONTAINERS_DIR,
            dockerfile=CONTAINERS_DIR / f"{name}.Dockerfile",
        )
        for name in ("postgres", "nginx")
    }
    port = free_port()
    env = {
        **podman_env(),
        **images,
        "QGJOB_IMAGE": qgjob_image,
        "QGJOB_PUBLISH": f"127.0.0.1:{port}",
    }
    project = f"qgjob-test-{uuid.uuid4().hex[:8]}"
    # --no-deps: podman 4.3 cannot start a service whose dependencies have dependencies,
    # nor wait for health, so every service starts at once; qgjobd's roles wait for the
    # database themselves, and migrating is safe from several of them together.
    _compose(env, project, "up", "--detach", "--no-build", "--no-deps")
    try:
        yield Stack(project, port)
    finally:
        _compose(env, project, "down", "--volumes", "--timeout", "10")


def test_a_suite_runs_through_two_api_replicas_with_tokens(stack: Stack) -> None:
    def healthy() -> bool:
        containers = [stack.container(api) for api in API_REPLICAS]
        checks = [podman("healthcheck", "run", name, check=False) for name in containers]
        return all(check.returncode == 0 for check in checks)

    # The image's HEALTHCHECK, run by hand: podman schedules it with systemd, absent here.
    wait_until(healthy, timeout=120, what="both API replicas to be healthy")
    created = podman("exec", stack.container("api-1"), "qgjobd", "token", "create", "--org=acme")
    token = created.stdout.strip()

    anonymous = stack.cli("list", "--org-id=acme", token=None)
    assert anonymous.returncode == 2, anonymous.stdout + anonymous.stderr
    tests = [f"--test=tests/spec_{n}.spec.js" for n in range(4)]
    submitted = stack.cli(
        "submit", "--org-id=acme", "--app-version-id=v1", *tests, "--target=emulator",
        "--wait", "--timeout=120", token=token,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "4 passed" in submitted.stdout
    for _ in range(4):
        assert stack.cli("list", "--org-id=acme", token=token).returncode == 0

    for service in API_REPLICAS:
        assert '"GET /jobs?' in stack.logs(service), f"{service} served no request"
    for runner in RUNNERS:
        assert f"agent {runner}:" in stack.logs(runner)
    migrate = podman("inspect", "--format", "{{.State.ExitCode}}", stack.container("migrate"))
    assert migrate.stdout.strip() == "0", stack.logs("migrate")
