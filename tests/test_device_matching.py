"""Jobs reach only the device slots that can serve them: a mixed fleet and a device matrix,
with the real CLI, API, projector and ``qgjobd runner``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.capabilities import Platform
from ledger.events import Target
from runner.executors import SlotSpec
from tests.support.factories import submitted
from tests.support.runner import agent_config, pipeline, submit, wait_all_ended
from tests.support.stack import LAB, qgjob, running_stack
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.slow

#: 2 Android emulators, 1 iOS simulator and BrowserStack with a Pixel 8 and an iPhone 15.
FLEET = LAB + """
[[slots]]
name = "bs-pixel-8"
target = "browserstack"
capabilities = { platform = "android", device = "Pixel 8", os_version = "14.0" }

[[slots]]
name = "bs-iphone-15"
target = "browserstack"
capabilities = { platform = "ios", device = "iPhone 15", os_version = "17" }

[[slots]]
name = "bs-iphone-14"
target = "browserstack"
capabilities = { platform = "ios", device = "iPhone 14", os_version = "16" }

[simulated]
install_s = 0.05
test_s = 0.05
"""


@pytest.fixture(scope="module")
def fleet(
    pg_server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("fleet")
    config = logs / "fleet.toml"
    config.write_text(FLEET)
    arguments = ["--config", str(config), "--poll-interval", "0.5"]
    with running_stack(pg_server_url, template_database, logs, arguments) as stack:
        yield stack


def submitted_job(server: str, *args: str) -> str:
    result = qgjob(server, "submit", "--org-id=acme", "--app-version-id=v1", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def slot_of_each(url: str, job_ids: list[str]) -> dict[str, set[str]]:
    """The names of the slots each job was assigned to, from the ledger."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            select a.stream_id::text, r.data ->> 'name'
            from events a
            join events r on r.stream_id = (a.data ->> 'device_id')::uuid
                         and r.type = 'DeviceRegistered'
            where a.type = 'JobAssigned' and a.stream_id::text = any(%s)
            """,
            (job_ids,),
        ).fetchall()
    slots: dict[str, set[str]] = {job_id: set() for job_id in job_ids}
    for job_id, name in rows:
        slots[job_id].add(name)
    return slots


def test_each_job_runs_only_on_a_slot_that_meets_its_needs(fleet: tuple[str, str]) -> None:
    server, url = fleet
    android = [submitted_job(server, "--test=a.spec.js", "--build=builds/app.apk") for _ in "xy"]
    ios = submitted_job(server, "--test=b.spec.js", "--build=https://ci.example/app.ipa?sig=1")
    pixel_8 = submitted_job(server, "--test=c.spec.js", "--target=browserstack", "--device=Pixel 8")
    ios_17 = submitted_job(
        server, "--test=d.spec.js", "--target=browserstack", "--platform=ios", "--os-version=17"
    )
    jobs = [*android, ios, pixel_8, ios_17]
    for job_id in jobs:
        waited = qgjob(server, "wait", f"--job-id={job_id}", "--timeout=60")
        assert waited.returncode == 0, waited.stdout + waited.stderr

    slots = slot_of_each(url, jobs)
    assert all(slots[job_id] <= {"android-1", "android-2"} and slots[job_id] for job_id in android)
    assert slots[ios] == {"ios-sim"}
    assert slots[pixel_8] == {"bs-pixel-8"}
    assert slots[ios_17] == {"bs-iphone-15"}


def test_a_job_for_a_device_nobody_has_is_reported_unschedulable(
    fleet: tuple[str, str],
) -> None:
    server, _url = fleet
    job_id = submitted_job(
        server, "--test=e.spec.js", "--target=browserstack", "--device=Galaxy S24"
    )
    deadline = time.monotonic() + 2.0  # a poll interval of the fleet's, with room
    while True:
        status = qgjob(server, "status", f"--job-id={job_id}", "--json")
        assert status.returncode == 0, status.stderr
        job = json.loads(status.stdout)
        if job["waiting"] or time.monotonic() > deadline:
            break
    assert job["status"] == "grouped"
    assert job["waiting"] == {
        "reason": "no_device",
        "message": "no live browserstack slot offers device Galaxy S24",
    }
    shown = qgjob(server, "status", f"--job-id={job_id}")
    assert "waiting: no live browserstack slot offers device Galaxy S24" in shown.stdout


def test_a_device_matrix_runs_every_spec_on_every_profile_in_one_run(
    fleet: tuple[str, str], tmp_path: Path
) -> None:
    """4 specs by 3 profiles: 12 jobs in one run, each on its profile's slot, reported per
    profile by ``submit --wait``."""
    server, url = fleet
    result = qgjob(
        server,
        "submit",
        "--org-id=acme",
        "--app-version-id=matrix-1",
        "--test=examples/tests/*.spec.js",
        "--target=browserstack",
        "--device-profile=platform=android,device=Pixel 8,os_version=14",
        "--device-profile=platform=ios,device=iPhone 15,os_version=17",
        "--device-profile=platform=ios,device=iPhone 14",
        "--wait",
        "--timeout=90",
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    assert len(run["jobs"]) == 12 and len({job["run_id"] for job in run["jobs"]}) == 1
    slots = slot_of_each(url, [job["job_id"] for job in run["jobs"]])
    expected = {"Pixel 8": "bs-pixel-8", "iPhone 15": "bs-iphone-15", "iPhone 14": "bs-iphone-14"}
    for job in run["jobs"]:
        assert slots[job["job_id"]] == {expected[job["device"]]}, job

    report = qgjob(server, "wait", f"--run-id={run['run_id']}")
    assert report.returncode == 0, report.stderr
    for profile in ("android Pixel 8 14", "ios iPhone 15 17", "ios iPhone 14"):
        assert f"{profile}: 4 passed (4/4 done)" in report.stdout


@pytest.mark.anyio
async def test_a_job_wakes_an_idle_slot_that_can_take_it_not_only_one_of_its_target(
    db_url: str,
) -> None:
    """An agent with an idle iOS and an idle Android emulator hears of an Android job:
    the Android slot claims it at once, long before the poll timer would fire."""
    slots = [
        SlotSpec(name="ios", target="emulator", capabilities={"platform": "ios"}),
        SlotSpec(name="android", target="emulator", capabilities={"platform": "android"}),
    ]
    config = agent_config("mixed", slots, poll_interval_s=60.0)
    async with pipeline(db_url, config):
        await async_wait_until(lambda: _registered(db_url), what="the slots to register")
        ids = await submit(db_url, [submitted(target=Target.EMULATOR, platform=Platform.ANDROID)])
        await wait_all_ended(db_url, ids, timeout=10)


async def _registered(url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("select count(*) from agent_slots")).fetchone()
    return row is not None and row[0] == 2
