"""How fast a projector catches up: 100,000 pre-appended job events, projected from scratch.

The ledger gets 20,000 jobs with their whole history (submitted, grouped, assigned,
started, passed: 5 events each; every test with its own duration) over 40 app versions
and 8 devices, in the order a live system writes them: a burst of submits, their
groupings, then each job's attempt (assigned, started, passed) as the device slots run
them one after another. That part is not timed. Then one ``Projector.catch_up()`` is
timed from an empty projection. Last line: ``RESULT events_per_s=…``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from ledger.events import (
    DeviceRegistered,
    Event,
    JobAssigned,
    JobPassed,
    JobStarted,
    JobSubmitted,
    Metadata,
    Target,
)
from ledger.grouping import resolve
from ledger.store import StreamWrite, append_many
from projections.projector import Projector

JOBS = 20_000
APP_VERSIONS = 40
DEVICES = 8
APPEND_BATCH = 2_000
METADATA = Metadata(org_id="bench", actor="bench")


async def _append_round(
    conn: psycopg.AsyncConnection[object],
    streams: Sequence[uuid.UUID],
    expected: int,
    events_for: Callable[[int], Event | tuple[Event, ...]],
) -> None:
    for start in range(0, len(streams), APPEND_BATCH):
        writes = [
            StreamWrite(
                stream_id=streams[i],
                expected_version=expected,
                events=_as_tuple(events_for(i)),
                metadata=METADATA,
            )
            for i in range(start, min(start + APPEND_BATCH, len(streams)))
        ]
        await append_many(conn, writes)


def _as_tuple(events: Event | tuple[Event, ...]) -> tuple[Event, ...]:
    return events if isinstance(events, tuple) else (events,)


async def _prepare(url: str) -> int:
    grouping = resolve("app_version")
    jobs = [uuid.uuid4() for _ in range(JOBS)]
    devices = [uuid.uuid4() for _ in range(DEVICES)]
    rng = random.Random(4)
    durations = [round(rng.uniform(1.0, 60.0), 3) for _ in range(JOBS)]
    submits = [
        JobSubmitted(
            org_id="bench",
            app_version_id=f"v{i % APP_VERSIONS}",
            test_path=f"tests/spec_{i}.spec.js",
            target=Target.EMULATOR,
            priority=1 + i % 10,
        )
        for i in range(JOBS)
    ]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await _append_round(
            conn,
            devices,
            0,
            lambda i: DeviceRegistered(name=f"emu-{i}", target=Target.EMULATOR, agent_id="bench"),
        )
        await _append_round(conn, jobs, 0, lambda i: submits[i])
        await _append_round(conn, jobs, 1, lambda i: grouping.group(submits[i]))
        await _append_round(
            conn,
            jobs,
            2,
            lambda i: (
                JobAssigned(attempt=1, device_id=devices[i % DEVICES], agent_id="bench"),
                JobStarted(attempt=1),
                JobPassed(attempt=1, duration_s=durations[i]),
            ),
        )
        await conn.execute("vacuum analyze events")
        cursor = await conn.execute("select count(*) from events")
        row = await cursor.fetchone()
    assert row is not None
    count: int = row[0]
    return count


async def _measure(url: str) -> tuple[int, float]:
    projector = Projector(url, name="bench")
    started = time.perf_counter()
    applied = await projector.catch_up()
    return applied, time.perf_counter() - started


def main() -> None:
    with bench_database() as url:
        total = asyncio.run(_prepare(url))
        print(f"appended {total:,} events ({JOBS:,} jobs x 5, {DEVICES} devices)")
        applied, seconds = asyncio.run(_measure(url))
    if applied != total:
        raise SystemExit(f"projected {applied} events, expected {total}")
    rate = applied / seconds
    print(f"projected {applied:,} events in {seconds:.2f}s: {rate:,.0f} events/s")
    print(f"RESULT events_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
