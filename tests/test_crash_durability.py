"""What a crash of the database server keeps, and how the work carries on after it.

A submit's transaction commits without waiting for its WAL flush, so that a job starts
sooner (http_api/submit.py); an answered submit must still survive a crash. A claim that
committed while its agent lost the server is taken up again by its slot once the server
is back, and the job runs once. The server is crashed as a power cut would: every
process of it killed at once, and with the WAL writer slowed down, what waited for no
flush is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.embedded import EmbeddedCluster
from ledger.events import JobSubmitted, Target
from ledger.migrate import apply_migrations
from runner import run_agent
from tests.support.api import api_client, job_body
from tests.support.dirs import server_dir
from tests.support.runner import (
    PASSED_AT_ONCE,
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until, wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self").exists(), reason="finds the server's processes"),
]


JOB = JobSubmitted(
    org_id="qualgent", app_version_id="app-1", test_path="t.spec.js", target=Target.EMULATOR
)


@pytest.fixture
def cluster() -> Iterator[EmbeddedCluster]:
    with server_dir() as root:
        cluster = EmbeddedCluster(root / "pg")
        try:
            yield cluster
        finally:
            cluster.stop()


def _slow_wal_writer(url: str) -> None:
    """Left alone, the WAL writer writes out every commit within 200 ms."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter system set wal_writer_delay = '10s'")
        conn.execute("select pg_reload_conf()")


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
    _slow_wal_writer(url)
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


async def test_a_claim_cut_off_by_a_crash_of_the_server_still_runs_its_job_once(
    cluster: EmbeddedCluster,
) -> None:
    """The server crashes while a slot installs the app for a job it claimed: once the
    server is back, the agent reconnects and the job runs and passes once; the outage
    costs it no attempt (the batch is handed back, or its claim taken up again)."""
    url = cluster.start()
    apply_migrations(url)
    _slow_wal_writer(url)
    # A long lease, so that the agent outlives the outage and is not rescued.
    config = agent_config("crash", "emulator:1", lease_ttl_s=60.0, simulated={"install_s": 3.0})
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(url, config, stop))
    try:

        async def listening() -> bool:
            return await _count(url, "DeviceRegistered") == 1

        await async_wait_until(listening, what="the agent to register its slot")
        (job_id,) = await submit(url, [JOB])

        async def claimed() -> bool:
            return await _count(url, "JobAssigned") == 1

        await async_wait_until(claimed, what="the agent to claim the job")
        _crash(cluster)
        cluster.start()
        async with pipeline(url):
            await wait_all_ended(url, [job_id], timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)

    (stream,) = (await histories(url, [job_id])).values()
    check_histories({job_id: stream})
    types = [recorded.type for recorded in stream]
    assert types in (PASSED_AT_ONCE, HANDED_BACK_ONCE), types


HANDED_BACK_ONCE = [*PASSED_AT_ONCE[:3], "JobRetryScheduled", *PASSED_AT_ONCE[2:]]


async def _count(url: str, event_type: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("select count(*) from events where type = %s", (event_type,))
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
