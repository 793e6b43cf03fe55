"""Rebuilding the projection from the ledger gives exactly the rows the live projector made."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.capabilities import Platform
from ledger.decisions import TERMINAL, JobState, JobStatus, decide, fold
from ledger.errors import TransitionRefused
from ledger.events import (
    AppInstalled,
    DeviceHeartbeat,
    DeviceRegistered,
    DeviceRetired,
    Event,
    FailureKind,
    JobAssigned,
    JobCancelled,
    JobFailed,
    JobGrouped,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    JobTimedOut,
    Target,
    TimeoutKind,
)
from ledger.store import read_stream
from projections import Projector, RebuildRunning, rebuild
from tests.support.factories import grouped, metadata
from tests.support.projector import (
    Snapshot,
    connected,
    fetch,
    fresh_database,
    later,
    record,
    snapshot,
)


@attrs.frozen
class Step:
    """One move of a random workload; what it does depends on the state it meets."""

    #: 0-99: which kind of move (project, rebuild, a device event, a job transition).
    kind: int
    #: Which job or device, and which of the allowed transitions.
    pick: int
    choice: int


steps = st.builds(
    Step, kind=st.integers(0, 99), pick=st.integers(0, 1000), choice=st.integers(0, 1000)
)
job_specs = st.builds(
    JobSubmitted,
    org_id=st.sampled_from(["acme", "globex"]),
    app_version_id=st.sampled_from(["v1", "v2", "v3"]),
    test_path=st.sampled_from(["a.spec.js", "b.spec.js"]),
    target=st.sampled_from(list(Target)),
    platform=st.none() | st.sampled_from(list(Platform)),
    device=st.none() | st.just("Pixel 8"),
    os_version=st.none() | st.just("14"),
    priority=st.integers(1, 10),
    max_attempts=st.integers(1, 3),
    tags=st.lists(st.sampled_from(["smoke", "login"]), max_size=2).map(tuple),
)


class Workload:
    """Plays steps against the ledger: only transitions ledger.decisions allows."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[JobSubmitted]) -> None:
        self.conn = conn
        self.specs = list(jobs)
        self.jobs = [uuid.uuid4() for _ in jobs]
        self.devices: list[tuple[uuid.UUID, Target]] = []
        self.groups: list[uuid.UUID] = []

    async def play(self, step: Step, url: str, projectors: Sequence[Projector]) -> None:
        if step.kind < 15:
            await projectors[step.pick % len(projectors)].catch_up()
        elif step.kind < 18:
            # The live projectors find their checkpoint moved and must forget their rows.
            await rebuild(url, batch_size=1 + step.pick % 10)
        elif step.kind < 28:
            await self._device_event(step)
        else:
            await self._job_event(step)

    async def _device_event(self, step: Step) -> None:
        if not self.devices or step.choice % 4 == 0:
            device, target = uuid.uuid4(), list(Target)[step.pick % len(Target)]
            self.devices.append((device, target))
            await record(
                self.conn,
                device,
                DeviceRegistered(name=f"d{len(self.devices)}", target=target, agent_id="agent"),
            )
            return
        device, _ = self.devices[step.pick % len(self.devices)]
        event: Event
        match step.choice % 4:
            case 1:
                group = self.groups[step.pick % len(self.groups)] if self.groups else None
                event = AppInstalled(app_version_id=f"v{step.pick % 3 + 1}", group_id=group)
            case 2:
                event = DeviceHeartbeat(agent_id="agent")
            case _:
                event = DeviceRetired(reason="worn out")
        await record(self.conn, device, event)

    async def _job_event(self, step: Step) -> None:
        index = step.pick % len(self.jobs)
        job, spec = self.jobs[index], self.specs[index]
        history = [e.event for e in await read_stream(self.conn, job)]
        state = fold(history)
        if state.group_id is not None and state.group_id not in self.groups:
            self.groups.append(state.group_id)
        options = self._options(state, spec)
        if not options:
            return
        events = options[step.choice % len(options)]
        check = state
        for event in events:
            try:
                check = decide(check, event)
            except TransitionRefused:
                return
        await record(self.conn, job, *events, meta=metadata(org_id=spec.org_id))

    def _options(self, state: JobState, spec: JobSubmitted) -> list[tuple[Event, ...]]:
        status, attempt = state.status, state.attempt
        device = next((d for d, target in self.devices if target == spec.target), None)
        if status is None:
            # Mostly as the API appends a job, with its JobGrouped; now and then as some
            # other writer might, ungrouped, which leaves it submitted until it ends.
            return [grouped(spec), grouped(spec), grouped(spec), (spec,)]
        if status in TERMINAL:
            return []
        cancel: list[tuple[Event, ...]] = [(JobCancelled(attempt=attempt or None),)]
        if status in (JobStatus.SUBMITTED, JobStatus.GROUPED, JobStatus.RETRYING):
            timeout = (JobTimedOut(kind=TimeoutKind.QUEUE, reason="waited too long"),)
            assign: list[tuple[Event, ...]] = []
            if device is not None and status != JobStatus.SUBMITTED:
                assign = [(JobAssigned(attempt=attempt + 1, device_id=device, agent_id="a"),)]
            return [*cancel, timeout, *assign]
        retry = JobRetryScheduled(attempt=attempt, not_before=later(60), reason="retry")
        handed_back = JobRetryScheduled(
            attempt=attempt, not_before=later(0), reason="drain", handed_back=True
        )
        infra = JobFailed(attempt=attempt, kind=FailureKind.INFRASTRUCTURE, reason="device lost")
        lease = JobLeaseExpired(attempt=attempt, agent_id="a")
        run_timeout = JobTimedOut(kind=TimeoutKind.RUN, reason="too slow", attempt=attempt)
        options = [
            *cancel,
            (infra,),
            (infra, retry),
            (lease,),
            (lease, retry),
            (handed_back,),
            (run_timeout,),
        ]
        if status == JobStatus.ASSIGNED:
            return [*options, (JobStarted(attempt=attempt),)]
        failed = JobFailed(attempt=attempt, kind=FailureKind.TEST, reason="assert", duration_s=0.5)
        return [
            *options,
            (JobPassed(attempt=attempt, duration_s=1.5, output="ok"),),
            (failed,),
            (failed, retry),
        ]


async def _consistent(conn: psycopg.AsyncConnection[Any]) -> None:
    """The counters agree with the rows, and every row with its stream."""
    for job in await fetch(conn, "select job_id, version, status, group_id from jobs"):
        history = await read_stream(conn, job["job_id"])
        state = fold(e.event for e in history)
        assert (job["version"], job["status"], job["group_id"]) == (
            state.version,
            state.status,
            state.group_id,
        )
    depth = await fetch(
        conn,
        "select org_id, target, status, count(*)::integer as depth from jobs "
        "group by 1, 2, 3 order by 1, 2, 3",
    )
    assert depth == await fetch(conn, "select * from queue_depth order by 1, 2, 3")
    on_devices = await fetch(
        conn,
        "select d.device_id, d.active_jobs, (select count(*) from jobs j where j.device_id = "
        "d.device_id and j.status in ('assigned', 'running'))::integer as counted from devices d",
    )
    assert all(d["active_jobs"] == d["counted"] for d in on_devices)
    grouped = await fetch(
        conn,
        "select g.queued + g.assigned + g.running + g.passed + g.failed + g.cancelled "
        "+ g.timed_out + g.errored as counted, "
        "(select count(*) from jobs j where j.group_id = g.group_id)::integer as jobs "
        "from groups g",
    )
    assert all(g["counted"] == g["jobs"] for g in grouped)


async def _scenario(
    url: str, specs: list[JobSubmitted], plan: list[Step], sizes: list[int]
) -> tuple[Snapshot, Snapshot]:
    projectors = [Projector(url, batch_size=size) for size in sizes]
    async with connected(url) as conn:
        workload = Workload(conn, specs)
        for step in plan:
            await workload.play(step, url, projectors)
        await projectors[0].catch_up()
        live = await snapshot(conn)
        await _consistent(conn)
        await rebuild(url, batch_size=sizes[-1])
        return live, await snapshot(conn)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    specs=st.lists(job_specs, min_size=1, max_size=6),
    plan=st.lists(steps, min_size=5, max_size=50),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
)
def test_rebuilding_after_a_random_workload_gives_exactly_the_live_rows(
    pg_server_url: str,
    template_database: str,
    specs: list[JobSubmitted],
    plan: list[Step],
    sizes: list[int],
) -> None:
    with fresh_database(pg_server_url, template_database) as url:
        live, rebuilt = asyncio.run(_scenario(url, specs, plan, sizes))
    assert rebuilt == live


@pytest.mark.anyio
async def test_a_rebuild_runs_beside_a_live_projector_and_both_end_on_the_same_rows(
    db_url: str,
) -> None:
    jobs = [uuid.uuid4() for _ in range(40)]
    stop = asyncio.Event()
    live = Projector(db_url, poll_interval=0.05, batch_size=5)
    running = asyncio.create_task(live.run(stop))
    try:
        async with connected(db_url) as conn:

            async def submit() -> None:
                for job in jobs:
                    await record(
                        conn,
                        job,
                        *grouped(
                            JobSubmitted(
                                org_id="acme",
                                app_version_id=f"v{job.int % 3}",
                                test_path="a.spec.js",
                                target=Target.EMULATOR,
                            )
                        ),
                    )

            await asyncio.gather(submit(), rebuild(db_url, batch_size=3))
            await Projector(db_url).catch_up()
            for job in jobs:
                # Neither the live projector nor the rebuild wrote to the ledger.
                assert [type(e.event) for e in await read_stream(conn, job)] == [
                    JobSubmitted,
                    JobGrouped,
                ]
            caught_up = await snapshot(conn)
            await rebuild(db_url)
            assert await snapshot(conn) == caught_up
            assert len(caught_up["jobs"]) == 40
    finally:
        stop.set()
        await running


@pytest.mark.anyio
async def test_only_one_rebuild_of_a_projection_runs_at_a_time(db_url: str) -> None:
    async with connected(db_url) as conn:
        await conn.execute("select pg_advisory_lock(7117005, hashtext('main'))")
        with pytest.raises(RebuildRunning):
            await rebuild(db_url)


def test_qgjobd_rebuild_replays_the_ledger_and_says_how_much(db_url: str, repo_root: Path) -> None:
    asyncio.run(_submit_one(db_url))
    result = subprocess.run(
        [sys.executable, "qgjobd.py", "rebuild", "main"],
        cwd=repo_root,
        env={**os.environ, "QGJOB_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "rebuilt projection main from 2 events"


async def _submit_one(url: str) -> None:
    async with connected(url) as conn:
        await record(
            conn,
            uuid.uuid4(),
            *grouped(
                JobSubmitted(
                    org_id="acme", app_version_id="v1", test_path="a.spec.js", target=Target.DEVICE
                )
            ),
        )


@pytest.mark.anyio
async def test_a_projector_that_loads_a_device_row_keeps_its_lease_expiries(db_url: str) -> None:
    """A projector that did not see a device's earlier events (restarted, or another
    process) loads its row: the lease expiries counted so far carry on from the row, as a
    rebuild counts them, instead of starting again from 0."""
    device, job = uuid.uuid4(), uuid.uuid4()
    registered = DeviceRegistered(name="d1", target=Target.EMULATOR, agent_id="a")
    submitted = JobSubmitted(
        org_id="acme", app_version_id="v1", test_path="a.spec.js", target=Target.EMULATOR
    )
    async with connected(db_url) as conn:
        await record(conn, device, registered)
        await record(conn, job, *grouped(submitted))
        await record(conn, job, JobAssigned(attempt=1, device_id=device, agent_id="a"))
        await record(conn, job, JobLeaseExpired(attempt=1, agent_id="a"))
        await Projector(db_url).catch_up()
        await record(conn, device, DeviceHeartbeat(agent_id="a"))
        await Projector(db_url).catch_up()  # a new process: it loads the device's row
        live = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == live
        [row] = await fetch(conn, "select lease_expiries from devices")
        assert row["lease_expiries"] == 1
