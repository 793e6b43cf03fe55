"""A big ledger against an empty one: reads, projection, appends and disk at ~6 M events.

The ledger is built in bulk: each job's events are encoded with the ledger's own codec
(ledger/codec.py) and COPYed into ``events`` 20,000 jobs per statement, so the
``events_keep_open_jobs`` trigger keeps open_jobs in step as an append would. A job is
submitted, grouped, assigned, started and passed; every fourth fails first on its
device and is retried (six events a job on average). Jobs span the last 90 days.
Every job but the last 1,000 ends, so open_jobs stays small as in a live system.

The same figures are taken on two databases of the bench's: one with 1,000 jobs (the
empty ledger) and one at full size:

- ``GET /jobs/{id}`` and ``GET /jobs?status=passed&limit=50`` over HTTP (one client,
  uvicorn, local mode): p50 and p99 of 1,000 and 300 requests;
- appends/s of one writer submitting one job (JobSubmitted + JobGrouped) per append,
  the median of five rounds of 1,000 on each database, taken in turn;
- the projector's catch-up from an empty projection, in events/s;
- ``qgjobd rebuild`` of the whole ledger, in events/s (full size only);
- disk per million events: the events table with its indexes, and the projections.

``LEDGER_JOBS`` (default 1,000,000) sets the size. Last line: ``RESULT jobs=… events=…
get_job_p99_ms=… list_p99_ms=… catch_up_events_per_s=… rebuild_events_per_s=…
append_vs_empty_pct=… ledger_mb_per_m_events=… projections_mb_per_m_events=…``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from bench._processes import ROOT, api_server
from ledger.codec import converter, encode, json_text
from ledger.events import (
    DeviceRegistered,
    Event,
    FailureKind,
    JobAssigned,
    JobFailed,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    Metadata,
    Target,
)
from ledger.grouping import resolve
from ledger.store import StreamWrite, append_many
from projections.projector import Projector
from projections.rebuild import PROJECTION_TABLES

JOBS = int(os.environ.get("LEDGER_JOBS", "1000000"))
EMPTY_JOBS = 1_000
OPEN_JOBS = 1_000
COPY_JOBS = 20_000
APP_VERSIONS = 200
DEVICES = 50
ORGS = ("acme", "globex", "initech", "umbrella")
SPAN = dt.timedelta(days=90)
APPENDS = 1_000
APPEND_ROUNDS = 5
GET_REQUESTS = 1_000
LIST_REQUESTS = 300
PROJECTIONS = (*PROJECTION_TABLES, "projector_checkpoints")


@attrs.frozen(kw_only=True)
class Figures:
    jobs: int
    events: int
    get_job_ms: tuple[float, float]
    list_ms: tuple[float, float]
    catch_up_events_per_s: float
    ledger_bytes: int
    projection_bytes: int


def _job_events(i: int, devices: list[uuid.UUID], grouping: Any, rng: random.Random) -> list[Event]:
    org_id = ORGS[i % len(ORGS)]
    submitted = JobSubmitted(
        org_id=org_id,
        app_version_id=f"app-{i % APP_VERSIONS:03d}",
        test_path=f"tests/case-{i % 5_000:04d}.spec.ts",
        target=Target.EMULATOR,
        priority=1 + i % 10,
    )
    events: list[Event] = [submitted, grouping.group(submitted)]
    device, attempt = devices[i % DEVICES], 1
    if i % 4 == 0:
        events += [
            JobAssigned(attempt=1, device_id=device, agent_id="bench:0"),
            JobStarted(attempt=1),
            JobFailed(attempt=1, kind=FailureKind.INFRASTRUCTURE, reason="adb went away"),
            JobRetryScheduled(
                attempt=1, not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), reason="retry"
            ),
        ]
        attempt = 2
    events += [
        JobAssigned(attempt=attempt, device_id=device, agent_id="bench:0"),
        JobStarted(attempt=attempt),
        JobPassed(attempt=attempt, duration_s=round(rng.uniform(5, 120), 3)),
    ]
    return events


def _copy_lines(first: int, count: int, total: int, devices: list[uuid.UUID]) -> Iterator[str]:
    """COPY text lines for jobs first..first+count of *total*; the last tenth, at most
    OPEN_JOBS, stay queued (submitted and grouped only)."""
    grouping = resolve()
    open_from = total - min(OPEN_JOBS, total // 10)
    rng = random.Random(first)
    start = dt.datetime.now(dt.UTC) - SPAN
    step = SPAN / total
    for i in range(first, first + count):
        events = _job_events(i, devices, grouping, rng)
        if i >= open_from:
            events = events[:2]
        stream_id = uuid.uuid4()
        metadata = _escaped(
            json_text(converter.unstructure(Metadata(org_id=ORGS[i % len(ORGS)], actor="bench")))
        )
        at = start + step * i
        for version, event in enumerate(events, start=1):
            type_name, data = encode(event)
            recorded_at = (at + dt.timedelta(seconds=version)).isoformat()
            yield (
                f"{stream_id}\t{version}\t{type_name}\t{_escaped(json_text(data))}\t"
                f"{metadata}\t{recorded_at}\n"
            )


def _escaped(text: str) -> str:
    """*text* as a COPY text-format field (JSON has no raw tabs or newlines)."""
    return text.replace("\\", "\\\\")


def _bulk_load(url: str, first: int, total: int, devices: list[uuid.UUID]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(first, total, COPY_JOBS):
            count = min(COPY_JOBS, total - start)
            with (
                conn.transaction(),
                conn.cursor() as cursor,
                cursor.copy(
                    "copy events (stream_id, version, type, data, metadata, recorded_at) from stdin"
                ) as copy,
            ):
                for line in _copy_lines(start, count, total, devices):
                    copy.write(line)
        conn.execute("vacuum analyze events")
        conn.execute("vacuum analyze open_jobs")


async def _register_devices(url: str) -> list[uuid.UUID]:
    devices = [uuid.uuid4() for _ in range(DEVICES)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await append_many(
            conn,
            [
                StreamWrite(
                    stream_id=device,
                    expected_version=0,
                    events=[
                        DeviceRegistered(
                            name=f"emu-{n}", target=Target.EMULATOR, agent_id="bench:0"
                        )
                    ],
                    metadata=Metadata(org_id="bench", actor="bench"),
                )
                for n, device in enumerate(devices)
            ],
        )
    return devices


async def _appends_per_s(empty_url: str, full_url: str) -> tuple[float, float]:
    """Appends/s on the empty and the full ledger: the medians of APPEND_ROUNDS rounds,
    taken in turn, so that load from elsewhere on the machine falls on both alike."""
    rates: dict[str, list[float]] = {empty_url: [], full_url: []}
    for round_ in range(APPEND_ROUNDS):
        for url in rates:
            rates[url].append(await _append_round(url, f"{round_}-{uuid.uuid4().hex[:8]}"))
    empty, full = (sorted(r)[len(r) // 2] for r in rates.values())
    return empty, full


async def _append_round(url: str, label: str) -> float:
    grouping = resolve()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for i in range(APPENDS):
            job = JobSubmitted(
                org_id="acme",
                app_version_id="app-append",
                test_path=f"tests/append-{label}-{i}.spec.ts",
                target=Target.EMULATOR,
            )
            await append_many(
                conn,
                [
                    StreamWrite(
                        stream_id=uuid.uuid4(),
                        expected_version=0,
                        events=[job, grouping.group(job)],
                        metadata=Metadata(org_id="acme", actor="bench"),
                    )
                ],
            )
        return APPENDS / (time.perf_counter() - started)


def _percentiles(port: int, paths: list[str]) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings = []
    for path in paths:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}")
    timings.sort()
    return timings[len(timings) // 2], timings[int(len(timings) * 0.99)]


def _scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _measure(url: str, jobs: int) -> Figures:
    with psycopg.connect(url, autocommit=True) as conn:
        events = _scalar(conn, "select count(*) from events")
        # Random jobs, the newest included, as a dashboard asks for them.
        ids = [
            str(row[0])
            for row in conn.execute(
                "select stream_id from events tablesample system (1) where version = 1"
                " and type = 'JobSubmitted' limit %s",
                (GET_REQUESTS,),
            ).fetchall()
        ]
    started = time.perf_counter()
    projected = asyncio.run(Projector(url, name="main").catch_up())
    catch_up = projected / (time.perf_counter() - started)
    with api_server(url) as (port, _process):
        _percentiles(port, [f"/jobs/{job_id}" for job_id in ids[:50]])  # warm-up
        get_job = _percentiles(port, [f"/jobs/{ids[n % len(ids)]}" for n in range(GET_REQUESTS)])
        lists = [
            f"/jobs?status=passed&limit=50&app_version_id=app-{n % APP_VERSIONS:03d}"
            if n % 2
            else "/jobs?status=passed&limit=50"
            for n in range(LIST_REQUESTS)
        ]
        list_ms = _percentiles(port, lists)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
        ledger_bytes = _scalar(conn, "select pg_total_relation_size('events')")
        projection_bytes = sum(
            _scalar(conn, "select pg_total_relation_size(%s::regclass)", (table,))
            for table in PROJECTIONS
        )
    return Figures(
        jobs=jobs,
        events=events,
        get_job_ms=get_job,
        list_ms=list_ms,
        catch_up_events_per_s=catch_up,
        ledger_bytes=ledger_bytes,
        projection_bytes=projection_bytes,
    )


def _rebuild_events_per_s(url: str, events: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "qgjobd.py"), "rebuild"],
        env={**os.environ, "QGJOB_DATABASE_URL": url, "QGJOB_LOG_LEVEL": "WARNING"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return events / (time.perf_counter() - started)


def _report(label: str, figures: Figures) -> None:
    per_m = 1e6 / max(figures.events, 1) / 2**20
    print(
        f"{label}: {figures.jobs:,} jobs, {figures.events:,} events\n"
        f"  GET /jobs/{{id}}      p50 {figures.get_job_ms[0]:.1f} ms, "
        f"p99 {figures.get_job_ms[1]:.1f} ms\n"
        f"  GET /jobs?… page   p50 {figures.list_ms[0]:.1f} ms, p99 {figures.list_ms[1]:.1f} ms\n"
        f"  projector catch-up {figures.catch_up_events_per_s:,.0f} events/s\n"
        f"  disk: ledger {figures.ledger_bytes / 2**20:,.0f} MB "
        f"({figures.ledger_bytes * per_m:,.0f} MB per million events), projections "
        f"{figures.projection_bytes / 2**20:,.0f} MB "
        f"({figures.projection_bytes * per_m:,.0f} MB per million events)"
    )


def main() -> None:
    with bench_database() as empty_url, bench_database() as url:
        _bulk_load(empty_url, 0, EMPTY_JOBS, asyncio.run(_register_devices(empty_url)))
        empty = _measure(empty_url, EMPTY_JOBS)
        _report("empty", empty)
        started = time.perf_counter()
        _bulk_load(url, 0, JOBS, asyncio.run(_register_devices(url)))
        load_s = time.perf_counter() - started
        full = _measure(url, JOBS)
        print(
            f"bulk load: {full.events:,} events in {load_s:.0f} s "
            f"({full.events / load_s:,.0f} events/s)"
        )
        _report("full", full)
        rebuild = _rebuild_events_per_s(url, full.events)
        print(f"  qgjobd rebuild     {rebuild:,.0f} events/s")
        empty_appends, full_appends = asyncio.run(_appends_per_s(empty_url, url))
    append_change = 100 * (full_appends / empty_appends - 1)
    print(
        f"appends (1 writer, one job each): empty {empty_appends:,.0f}/s, full "
        f"{full_appends:,.0f}/s ({append_change:+.1f} %)"
    )
    per_m = 1e6 / full.events / 2**20
    print(
        f"RESULT jobs={full.jobs} events={full.events}"
        f" get_job_p99_ms={full.get_job_ms[1]:.1f} list_p99_ms={full.list_ms[1]:.1f}"
        f" catch_up_events_per_s={full.catch_up_events_per_s:.0f}"
        f" rebuild_events_per_s={rebuild:.0f} append_vs_empty_pct={append_change:+.1f}"
        f" ledger_mb_per_m_events={full.ledger_bytes * per_m:.0f}"
        f" projections_mb_per_m_events={full.projection_bytes * per_m:.0f}"
    )


if __name__ == "__main__":
    main()
