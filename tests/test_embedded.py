"""The embedded PostgreSQL cluster: idempotent start, stop, crash recovery, URL precedence."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.embedded import EmbeddedCluster, database_url
from ledger.errors import EmbeddedClusterError
from tests.support.dirs import server_dir
from tests.support.waiting import wait_until

needs_procfs = pytest.mark.skipif(
    not Path("/proc/self").exists(), reason="counts processes via /proc"
)


@pytest.fixture
def project_dir() -> Iterator[Path]:
    """A directory standing for a checkout."""
    with server_dir() as path:
        yield path


@pytest.fixture(scope="module")
def initialised_data_dir() -> Iterator[Path]:
    """A stopped cluster's files, made once: initdb is most of a start's cost."""
    with server_dir() as root:
        template = EmbeddedCluster(root / "pg")
        template.start()
        template.stop()
        yield template.data_dir


@pytest.fixture
def fresh_cluster(project_dir: Path) -> Iterator[EmbeddedCluster]:
    """A cluster whose data directory does not exist yet."""
    cluster = EmbeddedCluster(project_dir / ".qgjob" / "pg")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(fresh_cluster: EmbeddedCluster, initialised_data_dir: Path) -> EmbeddedCluster:
    """A cluster whose data directory is a copy of an initialised, stopped one."""
    shutil.copytree(initialised_data_dir, fresh_cluster.data_dir, symlinks=True)
    return fresh_cluster


def _postmasters(data_dir: Path) -> set[int]:
    """Live postmasters serving data_dir.

    A postgres process whose command line names data_dir is a postmaster, or a child it
    forked that has not renamed itself yet; zombies have an empty command line.
    """
    parents = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if argv[0].endswith(b"/postgres") and os.fsencode(data_dir) in argv:
            parents[int(proc.name)] = int(stat.rpartition(")")[2].split()[1])
    return {pid for pid, parent in parents.items() if parent not in parents}


def _children(pid: int) -> list[int]:
    return [int(task) for task in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _postmaster_pid(cluster: EmbeddedCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])


@needs_procfs
def test_second_start_reuses_the_running_server(fresh_cluster: EmbeddedCluster) -> None:
    """A first start initialises the cluster; a second returns the same URL, one postmaster."""
    cluster = fresh_cluster
    first = cluster.start()
    second = cluster.start()

    assert first == second == cluster.status() == cluster.url()
    assert first.startswith("postgresql://postgres@/postgres?host=/tmp/qgjob-")
    assert _postmasters(cluster.data_dir) == {_postmaster_pid(cluster)}
    with psycopg.connect(first) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@needs_procfs
def test_concurrent_starts_share_one_server(fresh_cluster: EmbeddedCluster) -> None:
    """Two processes starting a new cluster at once get one server and the same URL."""
    cluster = fresh_cluster
    script = (
        "import sys; from pathlib import Path; from ledger.embedded import EmbeddedCluster; "
        "print(EmbeddedCluster(Path(sys.argv[1])).start())"
    )
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cluster.data_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    urls = {starter.communicate(timeout=60)[0].strip() for starter in starters}

    assert [starter.returncode for starter in starters] == [0, 0]
    assert urls == {cluster.url()}
    assert _postmasters(cluster.data_dir) == {_postmaster_pid(cluster)}


def test_stop_then_start_serves_again(cluster: EmbeddedCluster) -> None:
    """After a stop the cluster reports not running, and a new start serves the same data."""
    url = cluster.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table kept (note text)")

    cluster.stop()
    assert cluster.status() is None
    cluster.stop()  # stopping a stopped cluster is fine

    with psycopg.connect(cluster.start()) as conn:
        assert conn.execute("select count(*) from kept").fetchone() == (0,)


@needs_procfs
def test_stop_ends_a_server_whose_socket_was_removed(cluster: EmbeddedCluster) -> None:
    """A server unreachable because its /tmp socket directory was deleted can still be stopped."""
    cluster.start()
    shutil.rmtree(cluster.socket_dir)
    assert cluster.status() is None

    cluster.stop()

    assert _postmasters(cluster.data_dir) == set()
    assert not (cluster.data_dir / "postmaster.pid").exists()


def test_start_recovers_after_the_postmaster_is_killed(cluster: EmbeddedCluster) -> None:
    """kill -9 of the postmaster leaves stale locks; the next start recovers committed rows."""
    with psycopg.connect(cluster.start(), autocommit=True) as conn:
        conn.execute("create table survivor (note text)")
        conn.execute("insert into survivor values ('committed before the crash')")
    os.kill(_postmaster_pid(cluster), signal.SIGKILL)
    # The signal is delivered asynchronously.
    wait_until(lambda: cluster.status() is None, what="the killed server to go")

    with psycopg.connect(cluster.start()) as conn:
        rows = conn.execute("select note from survivor").fetchall()
    assert rows == [("committed before the crash",)]


@needs_procfs
def test_start_waits_for_the_backends_of_a_killed_postmaster(cluster: EmbeddedCluster) -> None:
    """A restart is refused while an old backend still holds shared memory, then succeeds."""
    cluster.start()
    postmaster = _postmaster_pid(cluster)
    backend = min(_children(postmaster))
    os.kill(backend, signal.SIGSTOP)  # it cannot notice its postmaster's death while stopped
    resume = threading.Timer(0.5, os.kill, (backend, signal.SIGCONT))
    try:
        os.kill(postmaster, signal.SIGKILL)
        wait_until(lambda: cluster.status() is None, what="the killed server to go")
        resume.start()
        url = cluster.start()
        resumed_first = resume.finished.is_set()
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # it has exited and been reaped
            os.kill(backend, signal.SIGCONT)

    assert resumed_first
    assert "is still in use" in (cluster.data_dir / "server.log").read_text()
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_url_of_a_stopped_cluster_is_a_clear_error(tmp_path: Path) -> None:
    """Asking a never-started cluster for its URL names the cluster and how to start it."""
    cluster = EmbeddedCluster(tmp_path / "pg")

    assert cluster.status() is None
    with pytest.raises(EmbeddedClusterError, match="qgjobd db start"):
        cluster.url()


def test_database_url_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With QGJOB_DATABASE_URL set, that URL is used and no cluster is created."""
    monkeypatch.setenv("QGJOB_DATABASE_URL", "postgresql://ledger@db.example/qgjob")

    assert database_url(tmp_path / ".qgjob" / "pg") == "postgresql://ledger@db.example/qgjob"
    assert not (tmp_path / ".qgjob").exists()


def test_database_url_starts_the_embedded_cluster(
    cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without QGJOB_DATABASE_URL, the embedded cluster is started and its URL returned."""
    monkeypatch.delenv("QGJOB_DATABASE_URL", raising=False)

    assert database_url(cluster.data_dir) == cluster.url()
