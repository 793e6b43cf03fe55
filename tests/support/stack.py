"""The real stack for process-level tests: a database, uvicorn, a projector, a runner.

uvicorn serves the API on a free port, a projector runs in a thread, and ``qgjobd
runner`` runs as a subprocess with the arguments a test gives it; the CLI is run as a
subprocess too, as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from projections.projector import Projector
from tests.support.api import REPO_ROOT, uvicorn_server
from tests.support.projector import fresh_database

__all__ = ["LAB", "qgjob", "runner_process", "running_stack"]


#: A runner config's start: an agent with 2 Android emulators and 1 iOS simulator, to
#: which a test adds its own slots and its [simulated] timings.
LAB = """
name = "lab"

[[slots]]
name = "android-1"
target = "emulator"
capabilities = { platform = "android", device = "Pixel 7", os_version = "13" }

[[slots]]
name = "android-2"
target = "emulator"
capabilities = { platform = "android", device = "Pixel 7", os_version = "13" }

[[slots]]
name = "ios-sim"
target = "emulator"
capabilities = { platform = "ios", device = "iPhone 15", os_version = "17.2" }
"""


@contextlib.contextmanager
def _projector(url: str) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        loop.run_until_complete(Projector(url, poll_interval=0.2).run(stop))

    thread = threading.Thread(target=run, name="projector")
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@contextlib.contextmanager
def runner_process(url: str, arguments: Sequence[str], log: Path) -> Iterator[None]:
    """``qgjobd runner`` with *arguments*, stopped with SIGTERM on the way out."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "qgjobd.py", "runner", *arguments],
            cwd=REPO_ROOT,
            env={**os.environ, "QGJOB_DATABASE_URL": url},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_stack(
    server_url: str,
    template: str,
    logs: Path,
    runner_arguments: Sequence[str],
    *,
    auth: str = "local",
) -> Iterator[tuple[str, str]]:
    """A fresh database with the API (local mode unless *auth* says ``token``), a
    projector and one runner on it; yields (the API's base URL, the database URL)."""
    with fresh_database(server_url, template) as url:
        env = {"QGJOB_DATABASE_URL": url, "QGJOB_AUTH": auth}
        with (
            uvicorn_server(env, log=logs / "api.log") as base,
            _projector(url),
            runner_process(url, runner_arguments, logs / "runner.log"),
        ):
            yield base, url


def qgjob(server: str, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run the CLI against *server*."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "qgjob.py"), *args],
        cwd=cwd,
        env={**os.environ, "QGJOB_SERVER": server},
        capture_output=True,
        text=True,
        timeout=120,
    )
