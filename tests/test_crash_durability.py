"""What the database server's crash keeps and loses, where commits skip the WAL flush.

A submit's transaction and a claim's commit without waiting for their WAL flush, so
that a job starts sooner (http_api/submit.py, runner/claim.py). An answered submit must
still survive a crash; a claim may be lost with it, and then the job runs once all the
same. The server is crashed as a power cut would: every process of it killed at once,
and with the WAL writer slowed down, what waited for no flush is gone.
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
    submit_grouped,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until, wait_until

pytestmark = [
    pytest.mark.anyio,
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


async def test_a_claim_lost_in_a_crash_of_the_server_is_claimed_again_and_runs_once(
    cluster: EmbeddedCluster,
) -> None:
    url = cluster.start()
    apply_migrations(url)
    _slow_wal_writer(url)
    # The install keeps the batch from appending (and so from flushing its claim) for a
    # while; a long lease keeps its renewals from flushing it either.
    config = agent_config("crash", "emulator:1", lease_ttl_s=60.0, simulated={"install_s": 3.0})
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(url, config, stop))
    try:

        async def listening() -> bool:
            return await _count(url, "DeviceRegistered") == 1

        await async_wait_until(listening, what="the agent to register its slot")
        # On disk before the agent hears of it, so that its claim is the one commit
        # waiting for the disk. (Through the API, the claim may commit before the
        # submit's flush, which would then flush the claim too.)
        (job_id,), _ = await submit_grouped(url, [JOB])

        async def claimed() -> bool:
            return await _count(url, "JobAssigned") == 1

        await async_wait_until(claimed, what="the agent to claim the job")
        _crash(cluster)
        cluster.start()
        assert await _count(url, "JobAssigned") == 0, "the claim was on disk before the crash"
        async with pipeline(url):  # the projector: the job reaches the jobs table again
            await wait_all_ended(url, [job_id], timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)

    (stream,) = (await histories(url, [job_id])).values()
    check_histories({job_id: stream})
    assert [recorded.type for recorded in stream] == PASSED_AT_ONCE


async def _count(url: str, event_type: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("select count(*) from events where type = %s", (event_type,))
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
