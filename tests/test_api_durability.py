"""A submit the API answered survives the database server crashing right after.

The submit's transaction commits without waiting for its WAL flush, so that devices
can claim the job sooner (http_api/submit.py); the answer must still wait for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.embedded import EmbeddedCluster
from ledger.migrate import apply_migrations
from tests.support.api import api_client, job_body
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not Path("/proc/self").exists(), reason="finds the server's processes"),
]


@pytest.fixture
def cluster() -> Iterator[EmbeddedCluster]:
    # Not below pytest's tmp_path, which is private to root; the server runs as its own user.
    root = Path(tempfile.mkdtemp(prefix="qgjob-test-"))
    cluster = EmbeddedCluster(root / "pg")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root)


def _crash(cluster: EmbeddedCluster) -> None:
    """Kill the server and every process of it at once, as a power cut would: what is
    only in its memory, WAL not yet written included, is gone."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    processes = [postmaster, *map(int, children)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.status() is None, what="the crashed server to go")


async def test_an_answered_submit_survives_a_crash_of_the_server(
    cluster: EmbeddedCluster,
) -> None:
    url = cluster.start()
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # Left alone, the WAL writer would write everything out within 200 ms.
        conn.execute("alter system set wal_writer_delay = '10s'")
        conn.execute("select pg_reload_conf()")
    async with api_client(url) as client:
        response = await client.post(
            "/jobs", json=job_body(), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert response.status_code == 201
        _crash(cluster)

    with psycopg.connect(cluster.start()) as conn:
        types = conn.execute(
            "select type from events where stream_id = %s order by version",
            (response.json()["job_id"],),
        ).fetchall()
    assert types == [("JobSubmitted",), ("JobGrouped",)]
