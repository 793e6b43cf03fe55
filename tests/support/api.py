"""Helpers for HTTP API tests: an in-process client, a real uvicorn server, ledger counts."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg

from http_api import create_app
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

JOB = {
    "org_id": "qualgent",
    "app_version_id": "xyz123",
    "test_path": "tests/onboarding.spec.js",
    "target": "device",
}


def job_body(**overrides: Any) -> dict[str, Any]:
    return {**JOB, **overrides}


def ledger_state(url: str) -> tuple[int, int]:
    """How many events there are, and the last position: equal before and after = untouched."""
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*), coalesce(max(position), 0) from events").fetchone()
    assert row is not None
    return row[0], row[1]


@contextlib.asynccontextmanager
async def api_client(
    url: str, *, local_mode: bool = True, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app for *url*, its lifespan running, behind an in-process client."""
    app = create_app(url, local_mode=local_mode, **settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client,
    ):
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn_server(env: Mapping[str, str], *, log: Path) -> Iterator[str]:
    """``uvicorn http_api.app:app`` in a subprocess on a free port; yields its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "http_api.app:app",
        "--port",
        str(port),
        "--http",
        "http_api.http_protocol:BoundedHttpToolsProtocol",
    ]
    with serving(command, env, port=port, log=log) as base:
        yield base


@contextlib.contextmanager
def qgjobd_api(db_url: str, *args: str, log: Path) -> Iterator[str]:
    """``qgjobd api`` (token mode unless *args* say otherwise) on a free port; yields its
    base URL."""
    port = free_port()
    command = [sys.executable, "qgjobd.py", "api", "--port", str(port), *args]
    with serving(command, {"QGJOB_DATABASE_URL": db_url}, port=port, log=log) as base:
        yield base


@contextlib.contextmanager
def serving(command: list[str], env: Mapping[str, str], *, port: int, log: Path) -> Iterator[str]:
    """Run *command*, an HTTP server on *port*, until the block ends; yields its base URL."""
    base = f"http://127.0.0.1:{port}"
    with running(command, env, log=log) as process:
        wait_until(
            lambda: process.poll() is not None or _answers(base),
            timeout=30,
            what=f"a server on port {port} (log: {log})",
        )
        assert process.poll() is None, f"the server exited: {log.read_text()}"
        yield base


@contextlib.contextmanager
def running(
    command: list[str], env: Mapping[str, str], *, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """*command* in the repository, its output in *log*, stopped (SIGTERM) when the block
    ends."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
