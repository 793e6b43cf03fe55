"""The projector as a service: crashes, a second projector, lost notifications, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.store import read_stream
from projections import Projector, rebuild
from tests.support.factories import submitted_and_grouped
from tests.support.projector import connected, fetch, record, snapshot, types
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio

# Holding this advisory lock stops any transaction that writes queue_depth (the last table a
# batch writes) in its tracks, with the batch's other rows already written.
_GATE = 424242
_GATE_TRIGGER = f"""
create function test_gate() returns trigger language plpgsql as $$
begin
    perform pg_advisory_xact_lock_shared({_GATE});
    return new;
end $$;
create trigger test_gate before insert or update on queue_depth
    for each row execute function test_gate();
"""
_FAIL_TRIGGER = """
create function test_fail() returns trigger language plpgsql as $$
begin
    raise exception 'the batch dies here';
end $$;
create trigger test_fail before insert or update on queue_depth
    for each row execute function test_fail();
"""


@contextlib.asynccontextmanager
async def running(projector: Projector) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _status(conn: psycopg.AsyncConnection[Any], job: uuid.UUID) -> str | None:
    rows = await fetch(conn, "select status from jobs where job_id = %s", job)
    return rows[0]["status"] if rows else None


async def _checkpoint(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    (row,) = await fetch(
        conn, "select txid, position from projector_checkpoints where name = 'main'"
    )
    return row


async def test_a_batch_that_dies_leaves_nothing_behind_and_a_rerun_ends_as_if_it_never_died(
    db_url: str,
) -> None:
    jobs = [uuid.uuid4() for _ in range(20)]
    async with connected(db_url) as conn:
        for job in jobs:
            await record(conn, job, *submitted_and_grouped(app_version_id=f"v{job.int % 4}"))
        await conn.execute(_FAIL_TRIGGER)
        before = await _checkpoint(conn)
        with pytest.raises(psycopg.errors.RaiseException):
            await Projector(db_url, batch_size=8).catch_up()
        # Jobs and groups were written before queue_depth failed: all of it went with the
        # transaction, and the checkpoint did not move.
        assert await snapshot(conn) == {"jobs": [], "groups": [], "devices": [], "queue_depth": []}
        assert await _checkpoint(conn) == before

        await conn.execute("drop trigger test_fail on queue_depth")
        await Projector(db_url, batch_size=8).catch_up()
        # The projector only reads the ledger, dying or not.
        for job in jobs:
            assert types(await read_stream(conn, job)) == ["JobSubmitted", "JobGrouped"]
        resumed = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == resumed
        assert len(resumed["jobs"]) == 20


async def test_a_projector_killed_mid_batch_resumes_and_ends_identical_to_a_clean_run(
    db_url: str,
) -> None:
    jobs = [uuid.uuid4() for _ in range(30)]
    async with connected(db_url) as conn, connected(db_url) as gate:
        await conn.execute(_GATE_TRIGGER)
        await gate.execute("select pg_advisory_lock(%s)", (_GATE,))
        for job in jobs:
            await record(conn, job, *submitted_and_grouped(app_version_id=f"v{job.int % 3}"))
        before = await _checkpoint(conn)
        projector = Projector(db_url, poll_interval=0.1, batch_size=10)
        async with running(projector):

            async def stuck_backend() -> int | None:
                rows = await fetch(
                    conn,
                    "select pid from pg_locks where locktype = 'advisory' and objid = %s "
                    "and not granted",
                    _GATE,
                )
                return rows[0]["pid"] if rows else None

            pid = await async_wait_until(stuck_backend, what="the projector to stop mid-batch")
            assert await snapshot(conn) == {
                "jobs": [],
                "groups": [],
                "devices": [],
                "queue_depth": [],
            }
            await conn.execute("select pg_terminate_backend(%s)", (pid,))
            # Whatever it wrote in that batch is gone, and the checkpoint did not move.
            assert await _checkpoint(conn) == before
            assert await snapshot(conn) == {
                "jobs": [],
                "groups": [],
                "devices": [],
                "queue_depth": [],
            }
            await gate.execute("select pg_advisory_unlock(%s)", (_GATE,))

            async def all_grouped() -> bool:
                rows = await fetch(conn, "select count(*) as n from jobs where status = 'grouped'")
                return bool(rows[0]["n"] == len(jobs))

            await async_wait_until(all_grouped, what="the projector to resume")
        for job in jobs:
            assert types(await read_stream(conn, job)) == ["JobSubmitted", "JobGrouped"]
        resumed = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == resumed


async def test_without_notifications_events_are_projected_within_the_poll_interval(
    db_url: str,
) -> None:
    poll = 0.3
    async with connected(db_url) as conn, running(Projector(db_url, poll_interval=poll)):
        for attempt in range(2):
            if attempt == 1:
                # Kill the connection notifications would come on, too.
                rows = await fetch(
                    conn,
                    "select pid from pg_stat_activity "
                    "where datname = current_database() and query ilike 'listen%%'",
                )
                assert rows
                for row in rows:
                    await conn.execute("select pg_terminate_backend(%s)", (row["pid"],))
            job = uuid.uuid4()
            # Appended without a NOTIFY to the projector (the ledger's own goes to devices):
            # only the poll timer can find it.
            await record(conn, job, *submitted_and_grouped())
            appended = time.monotonic()

            async def projected(job: uuid.UUID = job) -> bool:
                return await _status(conn, job) == "grouped"

            await async_wait_until(projected, timeout=5, what="the job to be projected")
            assert time.monotonic() - appended < poll + 0.5


async def test_a_second_projector_waits_and_takes_over_when_the_first_is_killed(
    db_url: str, repo_root: Path
) -> None:
    env = {**os.environ, "QGJOB_DATABASE_URL": db_url}
    first = subprocess.Popen(
        [sys.executable, "qgjobd.py", "projector", "--poll-interval", "0.2"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with connected(db_url) as conn:

            async def lock_held() -> bool:
                rows = await fetch(conn, "select running from projector_lag where name = 'main'")
                return bool(rows[0]["running"])

            await async_wait_until(lock_held, what="the first projector to start")
            second = Projector(db_url, poll_interval=0.2)
            async with running(second):
                job = uuid.uuid4()
                await record(conn, job, *submitted_and_grouped())

                async def grouped(job: uuid.UUID = job) -> bool:
                    return await _status(conn, job) == "grouped"

                await async_wait_until(grouped, what="the first projector to project")
                assert not second.active

                first.kill()
                first.wait(10)

                async def taken_over() -> bool:
                    return second.active

                await async_wait_until(taken_over, what="the second to take over")
                job = uuid.uuid4()
                await record(conn, job, *submitted_and_grouped())
                await async_wait_until(grouped, what="the second projector to project")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        assert first.stderr is not None
        first.stderr.close()


async def test_sigterm_stops_the_projector_service_cleanly(db_url: str, repo_root: Path) -> None:
    env = {**os.environ, "QGJOB_DATABASE_URL": db_url}
    service = subprocess.Popen(
        [sys.executable, "qgjobd.py", "projector", "--poll-interval", "0.2"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    async with connected(db_url) as conn:
        job = uuid.uuid4()
        await record(conn, job, *submitted_and_grouped())

        async def grouped() -> bool:
            return await _status(conn, job) == "grouped"

        await async_wait_until(grouped, what="the service to project")
    service.send_signal(signal.SIGTERM)
    _, errors = service.communicate(timeout=10)
    assert service.returncode == 0, errors.decode()
    assert b"projector main stopped" in errors
