"""The API served for real: uvicorn in a subprocess, configured from the environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_api.serve import SHUTDOWN_GRACE_S
from projections.projector import Projector
from tests.support.api import REPO_ROOT, free_port, job_body, uvicorn_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def test_uvicorn_serves_the_app_from_the_environment_in_local_mode(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "uvicorn.log"
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    with uvicorn_server(env, log=log) as base:
        submitted = httpx.post(f"{base}/submit-job", json=job_body())
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["job_id"]
        status = httpx.get(f"{base}/status/{job_id}")
        assert status.json()["status"] == "grouped"
        assert httpx.get(f"{base}/openapi.json").json()["openapi"].startswith("3.")
    assert "local mode: serving without API tokens" in log.read_text()


def test_uvicorn_requires_tokens_unless_told_otherwise(db_url: str, tmp_path: Path) -> None:
    token = subprocess.run(
        [sys.executable, "qgjobd.py", "token", "create", "--org", "qualgent"],
        cwd=REPO_ROOT,
        env={**os.environ, "QGJOB_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {"QGJOB_DATABASE_URL": db_url}
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        assert httpx.post(f"{base}/jobs", json=job_body()).status_code == 401
        authorised = {"Authorization": f"Bearer {token}"}
        response = httpx.post(f"{base}/jobs", json=job_body(), headers=authorised)
        assert response.status_code == 201
        assert response.json()["org_id"] == "qualgent"
    assert "local mode" not in (tmp_path / "uvicorn.log").read_text()


def test_qgjobd_api_serves_and_stops_on_sigterm(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "qgjobd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "qgjobd.py", "api", "--port", str(port), "--auth", "local"],
            cwd=REPO_ROOT,
            env={**os.environ, "QGJOB_DATABASE_URL": db_url},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None

        wait_until(answers, timeout=30, what="qgjobd api to answer")
        assert process.poll() is None, log.read_text()
        job_id = httpx.post(f"{base}/jobs", json=job_body()).json()["job_id"]
        # A long-poll in progress holds the shutdown for the grace period at most.
        poll = threading.Thread(target=_long_poll, args=(f"{base}/jobs/{job_id}?wait=60",))
        poll.start()
        wait_until(lambda: _gets_in_progress(base) >= 2, what="the long-poll to be held")
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down, as a supervisor expects.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - stopping < SHUTDOWN_GRACE_S + 5
        poll.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "local mode" in log.read_text()


def _long_poll(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=90)


def _gets_in_progress(base: str) -> float:
    """GET requests the server is answering, this one included, from its own metrics."""
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name == "qgjob_http_requests_in_progress" and sample.labels == {
                "method": "GET"
            }:
                return sample.value
    return 0.0


async def _next_snapshot(lines: Any) -> dict[str, Any]:
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            snapshot: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return snapshot
    raise AssertionError("the stream ended")


async def test_the_event_stream_sends_a_snapshot_now_and_after_each_change(
    db_url: str, tmp_path: Path
) -> None:
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            client.stream("GET", "/events/stream") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            first = await _next_snapshot(lines)
            assert first["jobs"] == []
            job = (await client.post("/jobs", json=job_body())).json()
            started = time.monotonic()
            await Projector(db_url).catch_up()
            with anyio.fail_after(10):
                second = await _next_snapshot(lines)
            assert time.monotonic() - started < 5
            assert [j["job_id"] for j in second["jobs"]] == [job["job_id"]]
            assert second["counts"] == {"grouped": 1}


def _send_head(base: str, header_bytes: int) -> bytes:
    """Send a GET whose one header holds *header_bytes* bytes; return what the server says."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * header_bytes
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(head), 65536):
                conn.sendall(head[start : start + 65536])
            conn.sendall(b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"connection: close" not in answer:
                    break
    return answer


def test_a_request_head_over_64_kib_is_refused_431_and_the_server_serves_on(
    db_url: str, tmp_path: Path
) -> None:
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        # Over the bound in one read, and in many reads of a head that never ends.
        assert _send_head(base, 70 * 1024).startswith(b"HTTP/1.1 431 ")
        assert _send_head(base, 8 * 1024 * 1024).startswith(b"HTTP/1.1 431 ")
        assert _send_head(base, 60 * 1024).startswith(b"HTTP/1.1 200 ")
        assert httpx.get(f"{base}/healthz").status_code == 200
