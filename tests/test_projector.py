"""The projector keeps jobs, groups, devices and queue depth in step with the ledger."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from ledger.capabilities import Platform
from ledger.decisions import JobStatus
from ledger.events import (
    AppInstalled,
    DeviceHeartbeat,
    DeviceRegistered,
    DeviceRetired,
    FailureKind,
    JobAssigned,
    JobCancelled,
    JobFailed,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobTimedOut,
    Target,
    TimeoutKind,
)
from ledger.grouping import group_id
from ledger.store import read_stream
from ledger.wakeup import Channel, Listener
from projections import Projector, rebuild
from projections.batch import BatchApplier, connect
from projections.rows import DEVICE_COLUMNS, JOB_COLUMNS
from tests.support.factories import submitted, submitted_and_grouped
from tests.support.projector import connected, fetch, later, record, snapshot, types
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio


async def _job(conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID) -> dict[str, Any]:
    (row,) = await fetch(conn, "select * from jobs where job_id = %s", job_id)
    return row


async def _device(conn: psycopg.AsyncConnection[Any], device_id: uuid.UUID) -> dict[str, Any]:
    (row,) = await fetch(conn, "select * from devices where device_id = %s", device_id)
    return row


async def _depth(conn: psycopg.AsyncConnection[Any]) -> dict[tuple[str, str, str], int]:
    rows = await fetch(conn, "select * from queue_depth")
    return {(r["org_id"], r["target"], r["status"]): r["depth"] for r in rows}


async def test_a_submitted_and_grouped_job_is_projected_and_counted_in_its_group(
    db_url: str,
) -> None:
    job = uuid.uuid4()
    async with connected(db_url) as conn:
        await record(conn, job, *submitted_and_grouped(org_id="acme", app_version_id="v7"))
        assert await Projector(db_url).catch_up() == 2  # JobSubmitted, then its JobGrouped
        row = await _job(conn, job)
        expected_group = group_id("app_version", "acme|device|app_version=v7")
        assert (row["status"], row["group_id"], row["version"]) == ("grouped", expected_group, 2)
        # The projector only reads the ledger: the stream is as the API appended it.
        assert types(await read_stream(conn, job)) == ["JobSubmitted", "JobGrouped"]
        (group,) = await fetch(conn, "select * from groups")
        assert (group["group_id"], group["org_id"], group["app_version_id"]) == (
            expected_group,
            "acme",
            "v7",
        )
        assert (group["strategy"], group["queued"], group["installs"]) == ("app_version", 1, 0)
        assert await _depth(conn) == {("acme", "device", "grouped"): 1}


async def test_a_job_submitted_ungrouped_is_projected_as_submitted_and_left_so(
    db_url: str,
) -> None:
    """A JobSubmitted some other writer appended alone: the projector never groups it."""
    job = uuid.uuid4()
    async with connected(db_url) as conn:
        await record(conn, job, submitted())
        assert await Projector(db_url).catch_up() == 1
        row = await _job(conn, job)
        assert (row["status"], row["group_id"], row["version"]) == ("submitted", None, 1)
        assert types(await read_stream(conn, job)) == ["JobSubmitted"]
        assert await fetch(conn, "select * from groups") == []
        assert await _depth(conn) == {("qualgent", "device", "submitted"): 1}


async def test_what_a_job_needs_of_the_device_is_projected(db_url: str) -> None:
    picky, anything = uuid.uuid4(), uuid.uuid4()
    async with connected(db_url) as conn:
        await record(
            conn,
            picky,
            *submitted_and_grouped(platform=Platform.ANDROID, device="Pixel 8", os_version="14"),
        )
        await record(conn, anything, *submitted_and_grouped())
        await Projector(db_url).catch_up()
        needs = [(await _job(conn, job)) for job in (picky, anything)]
        assert [(row["platform"], row["device"], row["os_version"]) for row in needs] == [
            ("android", "Pixel 8", "14"),
            (None, None, None),
        ]
        # Jobs needing different devices are in different groups.
        assert needs[0]["group_id"] != needs[1]["group_id"]


async def test_a_job_row_follows_its_attempt_and_the_device_is_busy_meanwhile(
    db_url: str,
) -> None:
    job, device = uuid.uuid4(), uuid.uuid4()
    projector = Projector(db_url)
    async with connected(db_url) as conn:
        await record(
            conn, device, DeviceRegistered(name="pixel", target=Target.DEVICE, agent_id="a")
        )
        await record(conn, job, *submitted_and_grouped())
        await projector.catch_up()
        await record(conn, job, JobAssigned(attempt=1, device_id=device, agent_id="a"))
        await record(conn, device, AppInstalled(app_version_id="xyz123"))
        await record(conn, job, JobStarted(attempt=1))
        await projector.catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["device_id"], row["attempts"]) == ("running", device, 1)
        assert row["assigned_at"] is not None and row["started_at"] is not None
        busy = await _device(conn, device)
        assert (busy["state"], busy["active_jobs"], busy["current_group"]) == (
            "busy",
            1,
            row["group_id"],
        )
        assert busy["installed_apps"] == ["xyz123"]

        await record(conn, job, JobPassed(attempt=1, duration_s=2.5, output="ok"))
        await projector.catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["duration_s"], row["output"], row["flaky"]) == (
            "passed",
            2.5,
            "ok",
            False,
        )
        assert row["finished_at"] is not None and row["version"] == 5
        idle = await _device(conn, device)
        assert (idle["state"], idle["active_jobs"], idle["current_group"]) == ("idle", 0, None)
        assert (idle["attempts"], idle["busy_s"], idle["installs"]) == (1, 2.5, 1)
        (group,) = await fetch(conn, "select * from groups")
        assert (group["queued"], group["passed"], group["attempts"]) == (0, 1, 1)
        assert await _depth(conn) == {("qualgent", "device", "passed"): 1}


async def test_a_failure_followed_by_a_retry_leaves_the_job_retrying_then_flaky_if_it_passes(
    db_url: str,
) -> None:
    job, device = uuid.uuid4(), uuid.uuid4()
    not_before = later(30)
    projector = Projector(db_url)
    async with connected(db_url) as conn:
        await record(conn, device, DeviceRegistered(name="emu", target=Target.DEVICE, agent_id="a"))
        await record(conn, job, *submitted_and_grouped(max_attempts=2))
        await projector.catch_up()
        await record(conn, job, JobAssigned(attempt=1, device_id=device, agent_id="a"))
        await record(conn, job, JobStarted(attempt=1))
        await record(
            conn,
            job,
            JobFailed(attempt=1, kind=FailureKind.TEST, reason="assertion failed", duration_s=1.0),
            JobRetryScheduled(attempt=1, not_before=not_before, reason="retry 2 of 2"),
        )
        await projector.catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["not_before"], row["device_id"]) == (
            "retrying",
            not_before,
            None,
        )
        assert (row["failure_kind"], row["last_error"]) == ("test", "assertion failed")
        assert (await _device(conn, device))["state"] == "idle"
        assert await _depth(conn) == {("qualgent", "device", "retrying"): 1}

        await record(conn, job, JobAssigned(attempt=2, device_id=device, agent_id="a"))
        await record(conn, job, JobStarted(attempt=2))
        await record(conn, job, JobPassed(attempt=2, duration_s=1.0))
        await projector.catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["attempts"], row["flaky"], row["not_before"]) == (
            "passed",
            2,
            True,
            None,
        )


async def test_a_batch_tells_the_api_waiters_and_leaves_waking_devices_to_the_ledger(
    db_url: str,
) -> None:
    """Devices hear of claimable work from the append itself (migrations/040_open_jobs.sql),
    before any projector ran; a batch notifies the API's waiters only, and appends nothing."""
    heard: list[tuple[Channel, str]] = []

    def note(channel: Channel, payload: str | None) -> None:
        if payload is not None:  # not the listener's own (re)connect
            heard.append((channel, payload))

    async def hear(what: str, *expected: tuple[Channel, str]) -> list[tuple[Channel, str]]:
        async def told() -> bool:
            return all(e in heard for e in expected)

        await async_wait_until(told, what=what)
        got = list(heard)
        heard.clear()
        return got

    async def batch_heard(conn: psycopg.AsyncConnection[Any]) -> set[Channel]:
        """The channels a catch-up notified: its NOTIFY commits before catch_up returns,
        so it reaches the listener before a marker sent after it."""
        await projector.catch_up()
        await conn.execute("select pg_notify(%s, 'marker')", (Channel.QUEUE.value,))
        got = await hear(
            "the batch's notification", (Channel.PROJECTIONS, ""), (Channel.QUEUE, "marker")
        )
        return {channel for channel, payload in got if payload != "marker"}

    job, device = uuid.uuid4(), uuid.uuid4()
    projector = Projector(db_url)
    async with (
        Listener(db_url, channels=(Channel.PROJECTIONS, Channel.QUEUE), on_notification=note),
        connected(db_url) as conn,
    ):
        await record(conn, job, *submitted_and_grouped(max_attempts=2))
        # Claimable as it is appended: the ledger wakes the target's devices.
        await hear("the submit to wake devices", (Channel.QUEUE, "device"))
        assert await batch_heard(conn) == {Channel.PROJECTIONS}

        await record(
            conn,
            job,
            JobAssigned(attempt=1, device_id=device, agent_id="a"),
            JobStarted(attempt=1),
        )
        assert await batch_heard(conn) == {Channel.PROJECTIONS}

        await record(
            conn,
            job,
            JobFailed(attempt=1, kind=FailureKind.TEST, reason="assertion failed", duration_s=1.0),
            JobRetryScheduled(attempt=1, not_before=later(0), reason="retry 2 of 2"),
        )
        await hear("the retry to wake devices", (Channel.QUEUE, "device"))
        assert await batch_heard(conn) == {Channel.PROJECTIONS}
        assert types(await read_stream(conn, job)) == [
            "JobSubmitted",
            "JobGrouped",
            "JobAssigned",
            "JobStarted",
            "JobFailed",
            "JobRetryScheduled",
        ]


async def test_an_expired_lease_requeues_the_job_and_frees_the_device(db_url: str) -> None:
    job, device = uuid.uuid4(), uuid.uuid4()
    projector = Projector(db_url)
    async with connected(db_url) as conn:
        await record(conn, device, DeviceRegistered(name="emu", target=Target.DEVICE, agent_id="a"))
        await record(conn, job, *submitted_and_grouped())
        await projector.catch_up()
        await record(conn, job, JobAssigned(attempt=1, device_id=device, agent_id="a"))
        await record(conn, job, JobStarted(attempt=1))
        await projector.catch_up()
        await record(
            conn,
            job,
            JobLeaseExpired(attempt=1, agent_id="a"),
            JobRetryScheduled(attempt=1, not_before=later(5), reason="agent lost"),
        )
        await projector.catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["failure_kind"]) == ("retrying", "infrastructure")
        assert "lease expired" in row["last_error"]
        device_row = await _device(conn, device)
        assert (device_row["active_jobs"], device_row["lease_expiries"]) == (0, 1)
        (group,) = await fetch(conn, "select * from groups")
        assert (group["queued"], group["running"], group["failed"]) == (1, 0, 0)


async def test_a_job_cancelled_before_grouping_is_never_grouped(db_url: str) -> None:
    job = uuid.uuid4()
    async with connected(db_url) as conn:
        await record(conn, job, submitted())
        await record(conn, job, JobCancelled(reason="changed my mind"))
        await Projector(db_url).catch_up()
        row = await _job(conn, job)
        assert (row["status"], row["group_id"], row["last_error"]) == (
            "cancelled",
            None,
            "changed my mind",
        )
        assert types(await read_stream(conn, job)) == ["JobSubmitted", "JobCancelled"]
        assert await fetch(conn, "select * from groups") == []


async def test_timeouts_end_jobs_as_timed_out(db_url: str) -> None:
    queued, running, device = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    projector = Projector(db_url)
    async with connected(db_url) as conn:
        await record(conn, device, DeviceRegistered(name="d", target=Target.DEVICE, agent_id="a"))
        await record(conn, queued, *submitted_and_grouped())
        await record(conn, running, *submitted_and_grouped())
        await projector.catch_up()
        await record(conn, queued, JobTimedOut(kind=TimeoutKind.QUEUE, reason="waited 60s"))
        await record(conn, running, JobAssigned(attempt=1, device_id=device, agent_id="a"))
        await record(conn, running, JobStarted(attempt=1))
        await record(conn, running, JobTimedOut(kind=TimeoutKind.RUN, reason="ran 30s", attempt=1))
        await projector.catch_up()
        assert (await _job(conn, queued))["last_error"] == "waited 60s"
        assert (await _job(conn, running))["status"] == JobStatus.TIMED_OUT
        assert await _depth(conn) == {("qualgent", "device", "timed_out"): 2}
        assert (await _device(conn, device))["state"] == "idle"


async def test_a_device_row_tracks_registration_installs_heartbeats_and_retirement(
    db_url: str,
) -> None:
    device = uuid.uuid4()
    async with connected(db_url) as conn:
        await record(
            conn,
            device,
            DeviceRegistered(
                name="pixel-7",
                target=Target.DEVICE,
                agent_id="host-1",
                capabilities={"platform": "android", "osVersion": "14"},
            ),
        )
        for app in ("v1", "v2", "v1"):
            await record(conn, device, AppInstalled(app_version_id=app))
        await record(conn, device, DeviceHeartbeat(agent_id="host-1"))
        await Projector(db_url).catch_up()
        row = await _device(conn, device)
        assert (row["name"], row["target"], row["capabilities"]) == (
            "pixel-7",
            "device",
            {"platform": "android", "osVersion": "14"},
        )
        assert (row["installed_apps"], row["installs"], row["version"]) == (["v1", "v2"], 3, 5)
        await record(conn, device, DeviceRetired(reason="screen cracked"))
        await Projector(db_url).catch_up()
        row = await _device(conn, device)
        assert row["state"] == "retired" and row["retired_at"] is not None


async def test_projectors_applying_at_once_apply_every_event_exactly_once(db_url: str) -> None:
    jobs = [uuid.uuid4() for _ in range(60)]
    async with connected(db_url) as conn:
        for job in jobs:
            await record(conn, job, *submitted_and_grouped(app_version_id=f"v{job.int % 3}"))
        projectors = [Projector(db_url, batch_size=size) for size in (1, 7, 50)]
        await asyncio.gather(*(p.catch_up() for p in projectors))
        await asyncio.gather(*(p.catch_up() for p in projectors))
        for job in jobs:
            assert types(await read_stream(conn, job)) == ["JobSubmitted", "JobGrouped"]
        groups = await fetch(conn, "select sum(queued) as queued from groups")
        assert groups == [{"queued": 60}]
        (lag,) = await fetch(conn, "select * from projector_lag where name = 'main'")
        assert (lag["events_behind"], lag["events_applied"]) == (0, 120)
        assert await _depth(conn) == {("qualgent", "device", "grouped"): 60}
        live = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == live


async def test_the_lag_view_counts_what_is_not_projected_yet(db_url: str) -> None:
    async with connected(db_url) as conn:
        for _ in range(3):
            await record(conn, uuid.uuid4(), *submitted_and_grouped())
        (lag,) = await fetch(conn, "select * from projector_lag where name = 'main'")
        assert (lag["events_behind"], lag["running"]) == (6, False)
        assert lag["seconds_behind"] > 0
        await Projector(db_url).catch_up()
        (lag,) = await fetch(conn, "select * from projector_lag where name = 'main'")
        assert (lag["events_behind"], lag["seconds_behind"], lag["events_applied"]) == (0, 0, 6)


async def test_a_projector_remembering_few_rows_ends_on_the_same_rows(db_url: str) -> None:
    device = uuid.uuid4()
    jobs = [uuid.uuid4() for _ in range(12)]
    applier = BatchApplier("main", batch_size=4, remember=3)
    async with (
        connected(db_url) as conn,
        await connect(db_url) as write,
        await connect(db_url) as read,
    ):
        await record(conn, device, DeviceRegistered(name="d", target=Target.DEVICE, agent_id="a"))
        for job in jobs:
            await record(conn, job, *submitted_and_grouped(app_version_id=f"v{job.int % 2}"))
        await applier.apply_all(write, read)
        for job in jobs:
            await record(conn, job, JobAssigned(attempt=1, device_id=device, agent_id="a"))
            await record(conn, job, JobStarted(attempt=1))
        await applier.apply_all(write, read)
        for job in jobs[::2]:
            await record(conn, job, JobPassed(attempt=1, duration_s=1.0))
        await applier.apply_all(write, read)
        remembered = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == remembered
        assert (await _device(conn, device))["active_jobs"] == 6


async def test_the_row_classes_match_the_migrated_tables(db_url: str) -> None:
    async with connected(db_url) as conn:
        for table, columns in (("jobs", JOB_COLUMNS), ("devices", DEVICE_COLUMNS)):
            rows = await fetch(
                conn,
                "select column_name from information_schema.columns "
                "where table_schema = current_schema() and table_name = %s",
                table,
            )
            assert set(columns) <= {row["column_name"] for row in rows}


async def test_an_event_that_commits_late_is_waited_for_not_skipped(db_url: str) -> None:
    slow, fast = uuid.uuid4(), uuid.uuid4()
    projector = Projector(db_url)
    async with connected(db_url) as conn, await psycopg.AsyncConnection.connect(db_url) as late:
        async with late.transaction():
            await record(late, slow, *submitted_and_grouped(test_path="slow.spec.js"))
            await record(conn, fast, *submitted_and_grouped(test_path="fast.spec.js"))
            # The fast job committed after the slow one began: projecting it now would move
            # the checkpoint past the slow one, which would then never be read.
            assert await projector.catch_up() == 0
        await projector.catch_up()
        statuses = await fetch(conn, "select job_id, status from jobs")
        assert {row["job_id"]: row["status"] for row in statuses} == {
            slow: "grouped",
            fast: "grouped",
        }
