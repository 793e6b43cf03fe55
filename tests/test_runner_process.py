"""A real ``qgjobd runner`` process: killed with -9 its jobs finish elsewhere; SIGTERM drains it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from ledger.decisions import JobStatus, decide, fold
from ledger.errors import ConcurrencyConflict, TransitionRefused
from ledger.events import (
    JobAssigned,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    Metadata,
)
from ledger.store import append, read_stream
from tests.support.factories import submitted
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

QGJOBD = Path(__file__).resolve().parent.parent / "qgjobd.py"


@pytest.fixture
def start_runner(db_url: str, tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"runner-{len(started)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(QGJOBD), "runner", *args],
                env={**os.environ, "QGJOB_DATABASE_URL": db_url},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _events(url: str, kind: str, agent_prefix: str) -> list[tuple[UUID, int]]:
    """(job, version) of each event of *kind* appended by an agent of that name."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "select stream_id, version from events where type = %s "
            "and metadata ->> 'actor' like %s order by position",
            (kind, f"runner:{agent_prefix}:%"),
        )
        return list(await cursor.fetchall())


async def test_a_killed_agents_jobs_finish_on_another_and_its_late_result_is_refused(
    db_url: str, start_runner: object
) -> None:
    doomed = start_runner(  # type: ignore[operator]
        "--name", "doomed", "--slots", "device:2", "--lease-ttl", "1",
        "--simulated", "install_s=0,test_s=0.4", "--poll-interval", "0.2",
    )  # fmt: skip
    survivor = agent_config("survivor", "device:2")
    ids = await submit(db_url, [submitted(test_path=f"tests/t{i}.spec.ts") for i in range(12)])
    async with pipeline(db_url) as running:

        async def mid_batch() -> bool:
            passed = await _events(db_url, "JobPassed", "doomed")
            started = await _events(db_url, "JobStarted", "doomed")
            return len(passed) >= 1 and len(started) > len(passed)

        await async_wait_until(mid_batch, timeout=20, what="the doomed agent to be mid-batch")
        doomed.kill()  # SIGKILL: no hand-back, no lease release
        assert doomed.wait() == -signal.SIGKILL
        started = await _events(db_url, "JobStarted", "doomed")
        passed = {job_id for job_id, _ in await _events(db_url, "JobPassed", "doomed")}
        running.add_agent(survivor)
        await wait_all_ended(db_url, ids, timeout=30)

    streams = await histories(db_url, ids)
    states = check_histories(streams)
    assert all(state.status == JobStatus.PASSED for state in states.values())
    # A job that was running when the agent died: its attempt expired (and counted) and
    # the survivor ran attempt 2.
    interrupted = [(job_id, version) for job_id, version in started if job_id not in passed]
    assert interrupted
    job_id, version_after_start = interrupted[0]
    events = [r.event for r in streams[job_id]]
    assert [type(e) for e in events[version_after_start:]] == [
        JobLeaseExpired, JobRetryScheduled, JobAssigned, JobStarted, JobPassed,
    ]  # fmt: skip
    expired = events[version_after_start]
    assert isinstance(expired, JobLeaseExpired) and expired.agent_id.startswith("doomed:")
    assert isinstance(events[-3], JobAssigned) and events[-3].agent_id.startswith("survivor:")
    assert events[-3].attempt == 2

    # The dead agent's late result, as it would have appended it, loses.
    late = JobPassed(attempt=1, duration_s=0.4)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        with pytest.raises(ConcurrencyConflict):
            await append(
                conn, job_id, version_after_start, [late], Metadata(org_id="qualgent", actor="x")
            )
        with pytest.raises(TransitionRefused):
            decide(fold(r.event for r in await read_stream(conn, job_id)), late)


async def test_a_killed_agent_is_known_dead_by_its_connection_not_its_lease(
    db_url: str, start_runner: object
) -> None:
    """kill -9 of an agent whose lease lasts a minute: its closed connection frees its
    life lock, so another agent hands its jobs on and runs them long before the lease
    could lapse."""
    doomed = start_runner(  # type: ignore[operator]
        "--name", "doomed", "--slots", "device:1", "--lease-ttl", "60",
        "--simulated", "install_s=0,test_s=0.5", "--poll-interval", "0.2",
    )  # fmt: skip
    ids = await submit(db_url, [submitted(test_path=f"tests/t{i}.spec.ts") for i in range(6)])
    async with pipeline(db_url) as running:

        async def mid_batch() -> bool:
            return len(await _events(db_url, "JobStarted", "doomed")) >= 1

        await async_wait_until(mid_batch, timeout=20, what="the doomed agent to start a test")
        running.add_agent(agent_config("survivor", "device:1", lease_ttl_s=60.0))
        doomed.kill()
        assert doomed.wait() == -signal.SIGKILL
        # The lease has most of a minute left: only the closed connection can tell.
        await wait_all_ended(db_url, ids, timeout=20)

    streams = await histories(db_url, ids)
    states = check_histories(streams)
    assert all(state.status == JobStatus.PASSED for state in states.values())
    expired = [r.event for s in streams.values() for r in s if isinstance(r.event, JobLeaseExpired)]
    assert expired and all(event.agent_id.startswith("doomed:") for event in expired)


async def test_sigterm_finishes_the_running_test_hands_back_the_rest_and_exits_0(
    db_url: str, start_runner: object
) -> None:
    draining = start_runner(  # type: ignore[operator]
        "--name", "draining", "--slots", "device:1",
        "--simulated", "install_s=0,test_s=0.5", "--poll-interval", "0.2",
    )  # fmt: skip
    ids = await submit(db_url, [submitted(test_path=f"tests/t{i}.spec.ts") for i in range(4)])
    async with pipeline(db_url) as running:

        async def first_started() -> bool:
            return bool(await _events(db_url, "JobStarted", "draining"))

        await async_wait_until(first_started, timeout=20, what="the first test to start")
        draining.send_signal(signal.SIGTERM)
        assert draining.wait(timeout=15) == 0
        [(first, _)] = await _events(db_url, "JobStarted", "draining")
        assert [job_id for job_id, _ in await _events(db_url, "JobPassed", "draining")] == [first]
        handed_back = await _events(db_url, "JobRetryScheduled", "draining")
        assert {job_id for job_id, _ in handed_back} == set(ids) - {first}
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            leases = await (await conn.execute("select count(*) from agent_leases")).fetchone()
            assert leases == (0,)
        running.add_agent(agent_config("next", "device:1"))
        await wait_all_ended(db_url, ids, timeout=20)

    states = check_histories(await histories(db_url, ids))
    assert all(state.status == JobStatus.PASSED for state in states.values())
    streams = await histories(db_url, ids)
    for job_id in set(ids) - {first}:
        retry = next(r.event for r in streams[job_id] if isinstance(r.event, JobRetryScheduled))
        assert retry.handed_back
        assert retry.reason == "handed back: the agent is shutting down"
