"""`qgjobd db` drives the embedded cluster from the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.api import REPO_ROOT
from tests.support.dirs import server_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with server_dir("qgjob-db-cli-") as base:
        try:
            yield base
        finally:
            _qgjobd(base, "db", "stop")


def _qgjobd(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QGJOB_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "qgjobd.py", "--data-dir", str(data_dir), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_start_twice_stop_and_start_after_kill_keeps_the_data(data_dir: Path) -> None:
    first = _qgjobd(data_dir, "db", "start")
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    again = _qgjobd(data_dir, "db", "start")
    assert again.returncode == 0 and again.stdout.strip() == url
    migrated = _qgjobd(data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table kept (note text)")
        conn.execute("insert into kept values ('before the kill')")

    assert _qgjobd(data_dir, "db", "stop").returncode == 0
    assert _qgjobd(data_dir, "db", "status").returncode == 1
    assert _qgjobd(data_dir, "db", "start").returncode == 0
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)

    restarted = _qgjobd(data_dir, "db", "start")
    assert restarted.returncode == 0, restarted.stderr
    with psycopg.connect(restarted.stdout.strip()) as conn:
        assert conn.execute("select note from kept").fetchall() == [("before the kill",)]
    assert "running" in _qgjobd(data_dir, "db", "status").stdout
