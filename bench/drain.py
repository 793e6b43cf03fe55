"""The whole pipeline draining a queue: projector + one runner process with 8 slots.

5,000 jobs (50 app versions, 3 orgs, one target) are appended to the ledger first,
submitted and grouped as the API appends them, not timed, and a checkpoint flushes what
that wrote. Then a projector process and a
``qgjobd runner`` process (8 emulator slots, the simulated executor with zero install
and test time) start, and the clock runs until the 5,000th JobPassed is in the ledger.
Start and end are read from the database's clock: the start just before the processes
are spawned, the end as the last JobPassed's ``recorded_at``. Afterwards every job's
history is checked to be exactly submitted, grouped, assigned, started, passed.

jobs/s is 5,000 over that time; events/s counts the events appended in it (three per
job, plus the slots' device events); the same from the first JobAssigned leaves out the
processes' start, as the peers' "drain after 1st start" does. Last line: ``RESULT
jobs_per_s=… events_per_s=… after_first_claim_jobs_per_s=…``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from bench._processes import zero_time_pipeline
from ledger.events import JobSubmitted, Metadata, Target
from ledger.grouping import resolve
from ledger.store import StreamWrite, append_many

JOBS = 5_000
APP_VERSIONS = 50
ORGS = ("acme", "globex", "initech")
SLOTS = 8
ROOT = Path(__file__).resolve().parent.parent
HISTORY = "JobSubmitted,JobGrouped,JobAssigned,JobStarted,JobPassed"


async def _submit(url: str) -> None:
    grouping = resolve()
    writes = []
    for i in range(JOBS):
        version = i % APP_VERSIONS
        org_id = ORGS[version % len(ORGS)]
        job = JobSubmitted(
            org_id=org_id,
            app_version_id=f"app-{version:02d}",
            test_path=f"tests/case-{i:04d}.spec.ts",
            target=Target.EMULATOR,
        )
        metadata = Metadata(org_id=org_id, actor="bench")
        writes.append(
            StreamWrite(
                stream_id=uuid.uuid4(),
                expected_version=0,
                events=[job, grouping.group(job)],
                metadata=metadata,
            )
        )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for start in range(0, JOBS, 1_000):
            await append_many(conn, writes[start : start + 1_000])


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def main() -> None:
    with bench_database() as url:
        asyncio.run(_submit(url))
        with psycopg.connect(url, autocommit=True) as conn:
            # Flush what creating the database and submitting wrote, so the timed part does
            # not pay for the untimed part's writes (needs superuser or pg_checkpoint).
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("checkpoint")
            started_at = _scalar(conn, "select clock_timestamp()")
            first_position = _scalar(conn, "select max(position) from events")
            with zero_time_pipeline(url, SLOTS) as runner:
                deadline = time.monotonic() + 300
                while _scalar(conn, "select count(*) from events where type = 'JobPassed'") < JOBS:
                    if time.monotonic() > deadline or runner.poll() is not None:
                        raise SystemExit("the runner did not drain the queue")
                    time.sleep(0.2)
                runner.send_signal(signal.SIGTERM)
                exit_code = runner.wait(60)
            finished_at = _scalar(
                conn, "select max(recorded_at) from events where type = 'JobPassed'"
            )
            first_assigned_at = _scalar(
                conn, "select min(recorded_at) from events where type = 'JobAssigned'"
            )
            appended = _scalar(
                conn,
                f"select count(*) from events where position > {first_position}",
            )
            complete = _scalar(
                conn,
                "select count(*) from (select string_agg(type, ',' order by version) as h "
                f"from events where type like 'Job%' group by stream_id) s where h = '{HISTORY}'",
            )
    seconds = (finished_at - started_at).total_seconds()
    # As the peers' "drain after 1st start": without the processes' start (Python's
    # imports, connecting, registering the slots).
    after_first = (finished_at - first_assigned_at).total_seconds()
    print(
        f"{JOBS} jobs ({APP_VERSIONS} app versions, {len(ORGS)} orgs) drained by one runner "
        f"with {SLOTS} slots and a zero-duration simulated executor, plus a projector"
    )
    print(f"runner exit code after SIGTERM: {exit_code}")
    print(f"jobs with the full submitted→grouped→assigned→started→passed history: {complete}")
    if complete != JOBS or exit_code != 0:
        raise SystemExit("the drain was not clean")
    print(f"{seconds:.2f} s: {JOBS / seconds:,.0f} jobs/s, {appended / seconds:,.0f} events/s")
    print(f"from the first claim: {after_first:.2f} s, {JOBS / after_first:,.0f} jobs/s")
    print(
        f"RESULT jobs_per_s={JOBS / seconds:.0f} events_per_s={appended / seconds:.0f} "
        f"after_first_claim_jobs_per_s={JOBS / after_first:.0f}"
    )


if __name__ == "__main__":
    main()
