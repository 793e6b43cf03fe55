"""The views for auditors answer their questions from the ledger and the projection."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from ledger.capabilities import Platform
from ledger.events import (
    AppInstalled,
    DeviceRegistered,
    JobAssigned,
    JobPassed,
    JobStarted,
    Metadata,
    Target,
)
from ledger.grouping import group_id
from projections import Projector
from tests.support.factories import submitted_and_grouped
from tests.support.projector import connected, fetch, record

pytestmark = pytest.mark.anyio

V1_GROUP = group_id("app_version", "acme|emulator|app_version=v1")
V2_GROUP = group_id("app_version", "acme|emulator|app_version=v2")


async def _day_of_testing(conn: psycopg.AsyncConnection[Any], url: str) -> dict[str, uuid.UUID]:
    """Three v1 jobs run on one emulator with one install; a v2 job and an urgent one wait."""
    ids = {name: uuid.uuid4() for name in ("a", "b", "c", "waiting", "urgent", "emulator")}
    emulator = ids["emulator"]
    await record(
        conn, emulator, DeviceRegistered(name="emu-1", target=Target.EMULATOR, agent_id="host")
    )
    api = Metadata(org_id="acme", actor="api")
    for name in ("a", "b", "c"):
        job = submitted_and_grouped(org_id="acme", app_version_id="v1", target=Target.EMULATOR)
        await record(conn, ids[name], *job, meta=api)
    for name, priority in (("waiting", 3), ("urgent", 9)):
        job = submitted_and_grouped(
            org_id="acme", app_version_id="v2", target=Target.EMULATOR, priority=priority
        )
        await record(conn, ids[name], *job, meta=api)
    await Projector(url).catch_up()
    await record(conn, emulator, AppInstalled(app_version_id="v1", group_id=V1_GROUP))
    runner = Metadata(org_id="acme", actor="runner:host")
    for name in ("a", "b", "c"):
        await record(
            conn,
            ids[name],
            JobAssigned(attempt=1, device_id=emulator, agent_id="host"),
            JobStarted(attempt=1),
            JobPassed(attempt=1, duration_s=2.0),
            meta=runner,
        )
    await Projector(url).catch_up()
    return ids


async def test_job_timeline_lists_every_event_of_a_job_in_order_with_its_actor(
    db_url: str,
) -> None:
    async with connected(db_url) as conn:
        ids = await _day_of_testing(conn, db_url)
        rows = await fetch(
            conn,
            "select version, type, actor, org_id from job_timeline where job_id = %s "
            "order by version",
            ids["a"],
        )
        assert rows == [
            {"version": 1, "type": "JobSubmitted", "actor": "api", "org_id": "acme"},
            # Grouped by the API, in the submit's append.
            {"version": 2, "type": "JobGrouped", "actor": "api", "org_id": "acme"},
            {"version": 3, "type": "JobAssigned", "actor": "runner:host", "org_id": "acme"},
            {"version": 4, "type": "JobStarted", "actor": "runner:host", "org_id": "acme"},
            {"version": 5, "type": "JobPassed", "actor": "runner:host", "org_id": "acme"},
        ]
        (grouped,) = await fetch(
            conn, "select data from job_timeline where job_id = %s and version = 2", ids["a"]
        )
        assert grouped["data"]["group_id"] == str(V1_GROUP)


async def test_queue_lists_what_waits_per_target_in_claim_order(db_url: str) -> None:
    async with connected(db_url) as conn:
        ids = await _day_of_testing(conn, db_url)
        rows = await fetch(
            conn,
            "select claim_rank, target, job_id, org_id, status, group_id, group_key, "
            "app_version_id, platform, device, os_version, priority, attempts, not_before, "
            "unschedulable from queue order by target, claim_rank",
        )
        # The passed jobs have left the queue; the two v2 jobs wait, the urgent one first.
        # No agent runs in this test, so no live slot can take them, and the view says so.
        waiting = {
            "target": "emulator",
            "org_id": "acme",
            "status": "grouped",
            "group_id": V2_GROUP,
            "group_key": "acme|emulator|app_version=v2",
            "app_version_id": "v2",
            "platform": None,
            "device": None,
            "os_version": None,
            "attempts": 0,
            "not_before": None,
            "unschedulable": "no live emulator slot is registered",
        }
        assert rows == [
            {**waiting, "claim_rank": 1, "job_id": ids["urgent"], "priority": 9},
            {**waiting, "claim_rank": 2, "job_id": ids["waiting"], "priority": 3},
        ]
        (oldest,) = await fetch(
            conn,
            "select waited_s, effective_priority from queue where job_id = %s",
            ids["waiting"],
        )
        assert oldest["waited_s"] >= 0 and oldest["effective_priority"] >= 3


async def test_queue_shows_a_job_as_it_is_submitted_and_what_no_slot_offers_it(
    db_url: str,
) -> None:
    """The queue is the ledger's claimable jobs, not the projection: it shows a job the
    projector has not read yet (the group's key, from the projection, comes later)."""
    job = uuid.uuid4()
    async with connected(db_url) as conn:
        await record(
            conn,
            job,
            *submitted_and_grouped(platform=Platform.ANDROID, device="Pixel 8", os_version="14"),
        )
        (row,) = await fetch(
            conn,
            "select job_id, status, group_key, platform, device, os_version, unschedulable "
            "from queue",
        )
        assert row == {
            "job_id": job,
            "status": "grouped",
            "group_key": None,
            "platform": "android",
            "device": "Pixel 8",
            "os_version": "14",
            "unschedulable": (
                "no live device slot offers platform android, device Pixel 8, OS version 14"
            ),
        }
        await Projector(db_url).catch_up()
        (row,) = await fetch(conn, "select group_key from queue")
        assert row["group_key"] == (
            "qualgent|device|platform=android,device=Pixel 8,os_version=14|app_version=xyz123"
        )


async def test_group_summary_counts_each_groups_jobs_by_status(db_url: str) -> None:
    async with connected(db_url) as conn:
        await _day_of_testing(conn, db_url)
        rows = await fetch(
            conn,
            "select group_id, app_version_id, jobs, queued, running, passed, attempts, "
            "installs, done from group_summary order by app_version_id",
        )
        assert rows == [
            {
                "group_id": V1_GROUP,
                "app_version_id": "v1",
                "jobs": 3,
                "queued": 0,
                "running": 0,
                "passed": 3,
                "attempts": 3,
                "installs": 1,
                "done": True,
            },
            {
                "group_id": V2_GROUP,
                "app_version_id": "v2",
                "jobs": 2,
                "queued": 2,
                "running": 0,
                "passed": 0,
                "attempts": 0,
                "installs": 0,
                "done": False,
            },
        ]


async def test_device_utilisation_shows_busy_time_against_registered_time(db_url: str) -> None:
    async with connected(db_url) as conn:
        ids = await _day_of_testing(conn, db_url)
        (row,) = await fetch(conn, "select * from device_utilisation")
        assert (row["device_id"], row["name"], row["state"]) == (ids["emulator"], "emu-1", "idle")
        assert (row["attempts"], row["installs"], row["apps_installed"], row["busy_s"]) == (
            3,
            1,
            1,
            6.0,
        )
        elapsed = (dt.datetime.now(dt.UTC) - row["registered_at"]).total_seconds()
        assert 0 < row["registered_s"] <= elapsed + 1
        assert row["utilisation"] == pytest.approx(6.0 / row["registered_s"])


async def test_install_savings_compares_installs_done_with_one_install_per_job(
    db_url: str,
) -> None:
    async with connected(db_url) as conn:
        await _day_of_testing(conn, db_url)
        rows = await fetch(conn, "select * from install_savings order by app_version_id")
        assert rows == [
            {
                "org_id": "acme",
                "app_version_id": "v1",
                "target": "emulator",
                "groups": 1,
                "per_job_installs": 3,
                "installs": 1,
                "installs_saved": 2,
                "saved_fraction": pytest.approx(2 / 3),
            },
            {
                "org_id": "acme",
                "app_version_id": "v2",
                "target": "emulator",
                "groups": 1,
                "per_job_installs": 0,
                "installs": 0,
                "installs_saved": 0,
                "saved_fraction": None,
            },
        ]


async def test_projector_lag_reports_events_and_seconds_behind_and_whether_it_runs(
    db_url: str,
) -> None:
    async with connected(db_url) as conn:
        await _day_of_testing(conn, db_url)
        (caught_up,) = await fetch(conn, "select * from projector_lag")
        assert (caught_up["name"], caught_up["events_behind"], caught_up["seconds_behind"]) == (
            "main",
            0,
            0,
        )
        await record(conn, uuid.uuid4(), *submitted_and_grouped())
        (behind,) = await fetch(conn, "select * from projector_lag")
        assert behind["events_behind"] == 2 and behind["seconds_behind"] > 0
        assert behind["running"] is False
