"""The dashboard's JSON routes with 10,000 jobs in the database.

A fresh database (embedded cluster or QGJOB_DATABASE_URL) gets RUNS suites of
RUN_SIZE tests over four organisations, submitted through the API as a user would, and
then each job's life on one of 8 slots appended to the ledger as a runner would write
it (assigned, started, passed with three per-test results; one install per slot and
group); the projector catches up. All of it lies in the last hour, so the timeline and
device routes read every one of those events.

Then, over one keep-alive connection, each route is read REPEAT times: the run page's
route (/dashboard/runs/{id}) for runs across the table, the runs list, the timeline of
one run and of the last hour, and the devices page.

Last line: ``RESULT run_p50_ms=… run_p95_ms=… runs_p50_ms=… timeline_hour_p50_ms=…``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from bench._database import bench_database
from bench._processes import api_server
from ledger.events import (
    AppInstalled,
    CaseResult,
    CaseStatus,
    DeviceRegistered,
    Event,
    JobAssigned,
    JobPassed,
    JobStarted,
    Metadata,
    Target,
)
from ledger.store import StreamWrite, append_many
from projections.projector import Projector

RUNS = 100
RUN_SIZE = 100
SLOTS = 8
REPEAT = 30
ORGS = ("acme", "globex", "initech", "umbrella")


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[float, Any]:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed_ms, json.loads(body)


def _submit_suites(port: int) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    run_ids = []
    for run in range(RUNS):
        body = {
            "org_id": ORGS[run % len(ORGS)],
            "app_version_id": f"app-{run}",
            "target": "emulator",
            "repo": "bench/app",
            "commit": f"{run:040x}",
            "tests": [f"tests/r{run:03d}-{index:03d}.spec.js" for index in range(RUN_SIZE)],
        }
        connection.request("POST", "/jobs", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 201:
            raise RuntimeError(f"submit: {response.status} {answer}")
        run_ids.append(answer["run_id"])
    return run_ids


def _cases(test_path: str) -> tuple[CaseResult, ...]:
    return tuple(
        CaseResult(
            file=test_path,
            title_path=("suite", f"case {n}"),
            status=CaseStatus.PASSED,
            line=10 * n,
            duration_s=0.2,
        )
        for n in range(3)
    )


async def _run_everything(url: str) -> None:
    """Each job's life on a slot, as a runner would append it, and the installs."""
    slots = [uuid.uuid4() for _ in range(SLOTS)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        system = Metadata(org_id="qgjob", actor="runner:bench")
        await append_many(
            conn,
            [
                StreamWrite(
                    stream_id=slot,
                    expected_version=0,
                    metadata=system,
                    events=[
                        DeviceRegistered(
                            name=f"emu-{n}",
                            target=Target.EMULATOR,
                            agent_id="bench",
                            capabilities={"platform": "android"},
                        )
                    ],
                )
                for n, slot in enumerate(slots)
            ],
        )
        cursor = await conn.execute(
            "select e.stream_id, e.metadata ->> 'org_id', s.data ->> 'test_path',"
            " (e.data ->> 'group_id')::uuid from events e"
            " join events s on s.stream_id = e.stream_id and s.type = 'JobSubmitted'"
            " where e.type = 'JobGrouped' order by e.position"
        )
        jobs = await cursor.fetchall()
        installed: set[tuple[uuid.UUID, uuid.UUID]] = set()
        device_versions = dict.fromkeys(slots, 1)
        batch: list[StreamWrite] = []
        # One append takes one write per stream: a slot's second install goes in the next.
        slots_in_batch: set[uuid.UUID] = set()
        for index, (job_id, org_id, test_path, group_id) in enumerate(jobs):
            slot = slots[index % SLOTS]
            metadata = Metadata(org_id=org_id, actor="runner:bench")
            if (slot, group_id) not in installed:
                if slot in slots_in_batch:
                    await append_many(conn, batch)
                    batch, slots_in_batch = [], set()
                installed.add((slot, group_id))
                slots_in_batch.add(slot)
                install: Sequence[Event] = [AppInstalled(app_version_id="bench", group_id=group_id)]
                batch.append(
                    StreamWrite(
                        stream_id=slot,
                        expected_version=device_versions[slot],
                        events=install,
                        metadata=metadata,
                    )
                )
                device_versions[slot] += 1
            batch.append(
                StreamWrite(
                    stream_id=job_id,
                    expected_version=2,
                    metadata=metadata,
                    events=[
                        JobAssigned(attempt=1, device_id=slot, agent_id="bench"),
                        JobStarted(attempt=1),
                        JobPassed(
                            attempt=1, duration_s=1.0, output="ok\n", tests=_cases(test_path)
                        ),
                    ],
                )
            )
            if len(batch) >= 500:
                await append_many(conn, batch)
                batch, slots_in_batch = [], set()
        await append_many(conn, batch)
    await Projector(url).catch_up()


def _timed(connection: http.client.HTTPConnection, paths: Sequence[str]) -> list[float]:
    _get(connection, paths[0])
    return [_get(connection, paths[n % len(paths)])[0] for n in range(REPEAT)]


def _p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    with bench_database() as url, api_server(url) as (port, _):
        started = time.perf_counter()
        run_ids = _submit_suites(port)
        asyncio.run(_run_everything(url))
        with psycopg.connect(url) as conn:
            jobs = conn.execute("select count(*) from jobs").fetchone()
            events = conn.execute("select count(*) from events").fetchone()
        print(
            f"filled: {jobs[0] if jobs else 0} jobs, {events[0] if events else 0} events "
            f"in {time.perf_counter() - started:.1f} s"
        )
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        spread = run_ids[:: max(1, RUNS // 10)]
        figures = {
            "run": _timed(connection, [f"/dashboard/runs/{run}" for run in spread]),
            "runs": _timed(connection, ["/dashboard/runs"]),
            "timeline_run": _timed(
                connection, [f"/dashboard/timeline?run={run}" for run in spread]
            ),
            "timeline_hour": _timed(connection, ["/dashboard/timeline?window=3600"]),
            "devices": _timed(connection, ["/dashboard/devices"]),
        }
        _, run = _get(connection, f"/dashboard/runs/{run_ids[0]}")
        assert len(run["jobs"]) == RUN_SIZE and run["progress"] == 1.0, run["counts"]
    for name, values in figures.items():
        print(f"{name:14} p50 {statistics.median(values):7.1f} ms   p95 {_p(values, 0.95):7.1f} ms")
    print(
        f"RESULT run_p50_ms={statistics.median(figures['run']):.1f} "
        f"run_p95_ms={_p(figures['run'], 0.95):.1f} "
        f"runs_p50_ms={statistics.median(figures['runs']):.1f} "
        f"timeline_run_p50_ms={statistics.median(figures['timeline_run']):.1f} "
        f"timeline_hour_p50_ms={statistics.median(figures['timeline_hour']):.1f} "
        f"devices_p50_ms={statistics.median(figures['devices']):.1f}"
    )


if __name__ == "__main__":
    main()
