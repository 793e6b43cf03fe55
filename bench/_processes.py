"""Processes a benchmark starts: qgjobd roles, and load generators on every core."""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def qgjobd(url: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``qgjobd ARGS`` against *url*; SIGTERM it (it drains) on leaving."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "qgjobd.py"), *args],
        env={**os.environ, "QGJOB_DATABASE_URL": url, "QGJOB_LOG_LEVEL": "WARNING"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def api_server(url: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``uvicorn http_api.app:app`` (one worker, local mode, no access log) on a free port
    against *url*; yields the port and the process once it answers /healthz."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "http_api.app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "QGJOB_DATABASE_URL": url, "QGJOB_AUTH": "local"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.05)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def zero_time_pipeline(url: str, slots: int) -> Iterator[subprocess.Popen[bytes]]:
    """A projector and a runner with *slots* emulator slots whose tests take no time."""
    with (
        qgjobd(url, "projector", "--poll-interval", "0.5"),
        qgjobd(
            url,
            "runner",
            "--name",
            "bench",
            "--slots",
            f"emulator:{slots}",
            "--simulated",
            "install_s=0,test_s=0,time_scale=0",
        ) as runner,
    ):
        yield runner


def total_over_processes(work: Callable[..., None], arguments: Sequence[tuple[Any, ...]]) -> int:
    """Run ``work(*args, results)`` in one process per *arguments* item; sum what they put."""
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=work, args=(*args, results)) for args in arguments]
    for process in processes:
        process.start()
    total, reported = 0, 0
    while reported < len(processes):
        try:
            total += results.get(timeout=1.0)
            reported += 1
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a load process failed (exit code {failed[0]})") from None
    for process in processes:
        process.join()
    return total
