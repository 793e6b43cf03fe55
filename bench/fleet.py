"""A lab's fleet on one PostgreSQL: 200 agents x 4 emulator slots, idle and then busy.

The agents run 20 to a process (10 processes), each agent a real ``runner.agent.Agent``
with its own connections, its lease, listener, poll timer and maintenance, and the
simulated executor. The bench starts its own PostgreSQL cluster (the embedded one, in a
temporary directory, with room for the fleet's connections and pg_stat_statements), unless
QGJOB_DATABASE_URL names a server, which then needs both.

It measures, in order:

1. connections: pg_stat_activity of the bench's database once every slot is registered;
2. idle cost: the CPU time of all PostgreSQL processes (from /proc) over ``FLEET_IDLE_S``
   seconds with nothing queued, and the statements that spent it (pg_stat_statements);
3. one job: how many claims (executions of the claim's ``queue_summary`` query) one job
   arriving sets off: the claims of a second in which one job is submitted, less those
   of a second without (the poll timers claim too), means of five of each;
4. load: ``FLEET_SUITES`` suites of 50 jobs, one every 0.2 s (test 0.2 s, no install):
   claims per second and p50/p99 submit→start (JobSubmitted to JobStarted, both from the
   database's clock).

Sizes: ``FLEET_AGENTS`` (200), ``FLEET_PROCESSES`` (10); ``FLEET_POLL_S`` sets the
agents' poll interval (10 s, as by default). Last line:
``RESULT agents=… connections_per_agent=… idle_cpu_pct=… claims_per_job=… claims_per_s=…
submit_to_start_p99_ms=…``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from ledger.embedded import DATABASE_URL_ENV, EmbeddedCluster
from ledger.events import JobSubmitted, Metadata, Target
from ledger.grouping import resolve
from ledger.store import StreamWrite, append_many
from runner.agent import run_agent
from runner.config import build_config

AGENTS = int(os.environ.get("FLEET_AGENTS", "200"))
PROCESSES = int(os.environ.get("FLEET_PROCESSES", "10"))
SLOTS_PER_AGENT = 4
IDLE_S = float(os.environ.get("FLEET_IDLE_S", "20"))
#: Each agent's poll_interval_s (10 s is runner/config.py's default).
POLL_S = float(os.environ.get("FLEET_POLL_S", "10"))
SUITES = int(os.environ.get("FLEET_SUITES", "40"))
ONE_JOB_ROUNDS = 5
ONE_JOB_WINDOW_S = 1.0
SUITE_JOBS = 50
SUITE_EVERY_S = 0.2
TEST_S = 0.2
#: Connections an agent may open, with room for the bench's own.
CONNECTIONS_PER_AGENT_ROOM = 16
#: The claim's queue_summary (runner/queries.sql): one execution per claim attempt.
CLAIM_QUERY = "%with claimable as%"


def _agents(url: str, first: int, count: int, stop: Any) -> None:
    """One load process: *count* agents in one event loop until *stop* is set."""

    async def serve() -> None:
        stopping = asyncio.Event()
        configs = [
            build_config(
                {
                    "name": f"fleet-{index:03d}",
                    "slots": [
                        {"name": f"emu-{slot}", "target": "emulator"}
                        for slot in range(SLOTS_PER_AGENT)
                    ],
                    "simulated": {"install_s": 0, "test_s": TEST_S},
                    "poll_interval_s": POLL_S,
                }
            )
            for index in range(first, first + count)
        ]
        agents = [asyncio.create_task(run_agent(url, config, stopping)) for config in configs]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        stopping.set()
        await asyncio.gather(*agents)

    asyncio.run(serve())


def _scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _wait_for(conn: psycopg.Connection[Any], query: str, wanted: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _scalar(conn, query) < wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {query!r} to reach {wanted}")
        time.sleep(0.2)


def _postgres_cpu_s(conn: psycopg.Connection[Any]) -> float:
    """CPU seconds used so far by the postmaster and every one of its children."""
    postmaster = _ppid(_scalar(conn, "select pg_backend_pid()"))
    return _cpu_s(lambda pid, ppid: postmaster in (pid, ppid))


def _agents_cpu_s(processes: list[multiprocessing.Process]) -> float:
    pids = {process.pid for process in processes}
    return _cpu_s(lambda pid, _ppid: pid in pids)


def _cpu_s(chosen: Callable[[int, int], bool]) -> float:
    """CPU seconds used so far by the processes *chosen* by (pid, parent pid)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if chosen(int(entry.name), int(fields[1])):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _ppid(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _statements(conn: psycopg.Connection[Any], limit: int = 6) -> list[tuple[int, float, str]]:
    rows = conn.execute(
        "select calls, total_exec_time, regexp_replace(left(query, 70), '\\s+', ' ', 'g')"
        " from pg_stat_statements where dbid = (select oid from pg_database"
        " where datname = current_database()) order by total_exec_time desc limit %s",
        (limit,),
    ).fetchall()
    return [(int(calls), float(ms), text) for calls, ms, text in rows]


def _claims(conn: psycopg.Connection[Any]) -> int:
    return int(
        _scalar(
            conn,
            "select coalesce(sum(calls), 0) from pg_stat_statements where query like %s"
            " and dbid = (select oid from pg_database"
            " where datname = current_database())",
            (CLAIM_QUERY,),
        )
    )


def _settled_connections(conn: psycopg.Connection[Any]) -> int:
    """The fleet's connections, once their number stopped growing for three seconds."""
    query = (
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid()"
    )
    counts = [_scalar(conn, query)]
    while len(counts) < 4 or counts[-1] > counts[-4]:
        time.sleep(1)
        counts.append(_scalar(conn, query))
    return int(counts[-1])


def _claims_in(conn: psycopg.Connection[Any], url: str, *, jobs: int) -> int:
    """Claims in ONE_JOB_WINDOW_S seconds, in which *jobs* jobs are submitted at once."""
    started_jobs = "select count(*) from events where type = 'JobStarted'"
    before, claims_before = _scalar(conn, started_jobs), _claims(conn)
    started = time.monotonic()
    if jobs:
        asyncio.run(_submit(url, 1, jobs, 0))
    time.sleep(max(0.0, ONE_JOB_WINDOW_S - (time.monotonic() - started)))
    claims = _claims(conn) - claims_before
    if _scalar(conn, started_jobs) - before != jobs:
        raise SystemExit(f"{jobs} job(s) did not start within {ONE_JOB_WINDOW_S} s")
    return claims


async def _submit(url: str, suites: int, jobs: int, every_s: float) -> None:
    grouping = resolve()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for suite in range(suites):
            writes = []
            for i in range(jobs):
                job = JobSubmitted(
                    org_id=f"org-{suite % 5}",
                    app_version_id=f"app-{suite}",
                    test_path=f"tests/case-{i:03d}.spec.ts",
                    target=Target.EMULATOR,
                )
                writes.append(
                    StreamWrite(
                        stream_id=uuid.uuid4(),
                        expected_version=0,
                        events=[job, grouping.group(job)],
                        metadata=Metadata(org_id=job.org_id, actor="bench"),
                    )
                )
            await append_many(conn, writes)
            await asyncio.sleep(every_s)


def _measure(url: str) -> None:
    stop = multiprocessing.Event()
    per_process = -(-AGENTS // PROCESSES)
    processes = [
        multiprocessing.Process(
            target=_agents, args=(url, first, min(per_process, AGENTS - first), stop)
        )
        for first in range(0, AGENTS, per_process)
    ]
    for process in processes:
        process.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists pg_stat_statements")
            slots = AGENTS * SLOTS_PER_AGENT
            _wait_for(conn, "select count(*) from agent_slots", slots, 300)
            _wait_for(conn, "select count(*) from agent_leases", AGENTS, 60)
            connections = _settled_connections(conn)
            print(
                f"{AGENTS} agents x {SLOTS_PER_AGENT} slots = {slots} slots "
                f"in {len(processes)} processes"
            )
            print(f"connections: {connections} ({connections / AGENTS:.1f} per agent)")

            conn.execute("select pg_stat_statements_reset()")
            cpu_before, started = _postgres_cpu_s(conn), time.monotonic()
            agents_before = _agents_cpu_s(processes)
            time.sleep(IDLE_S)
            idle_cpu = _postgres_cpu_s(conn) - cpu_before
            idle_agents_cpu = _agents_cpu_s(processes) - agents_before
            idle_s = time.monotonic() - started
            idle_claims = _claims(conn)
            idle_pct = 100 * idle_cpu / idle_s
            print(
                f"idle: PostgreSQL used {idle_cpu:.2f} CPU s in {idle_s:.1f} s "
                f"({idle_pct:.1f} % of one core); {idle_claims / idle_s:.0f} claims/s; "
                f"the agents' processes used {100 * idle_agents_cpu / idle_s:.0f} % of one core"
            )
            print("idle: statements by time (calls, ms, query):")
            for calls, ms, text in _statements(conn):
                print(f"  {calls:>8} {ms:>9.0f}  {text}")

            quiet = [_claims_in(conn, url, jobs=0) for _ in range(ONE_JOB_ROUNDS)]
            woken = [_claims_in(conn, url, jobs=1) for _ in range(ONE_JOB_ROUNDS)]
            one_job = round(statistics.mean(woken) - statistics.mean(quiet))
            print(
                f"one job: {statistics.mean(woken):.0f} claims in the {ONE_JOB_WINDOW_S} s "
                f"after it was submitted, against {statistics.mean(quiet):.0f} in a "
                f"{ONE_JOB_WINDOW_S} s without (means of {ONE_JOB_ROUNDS}): "
                f"{one_job} claims for one job"
            )

            conn.execute("select pg_stat_statements_reset()")
            first_position = _scalar(conn, "select max(position) from events")
            passed = _scalar(conn, "select count(*) from events where type = 'JobPassed'")
            started, cpu_before = time.monotonic(), _postgres_cpu_s(conn)
            agents_before = _agents_cpu_s(processes)
            asyncio.run(_submit(url, SUITES, SUITE_JOBS, SUITE_EVERY_S))
            _wait_for(
                conn,
                "select count(*) from events where type = 'JobPassed'",
                passed + SUITES * SUITE_JOBS,
                600,
            )
            busy_s = time.monotonic() - started
            busy_cpu = _postgres_cpu_s(conn) - cpu_before
            busy_agents_cpu = _agents_cpu_s(processes) - agents_before
            assigned = _scalar(
                conn,
                "select count(*) from events where type = 'JobAssigned' and position > %s",
                (first_position,),
            )
            claims = _claims(conn)
            p50, p99 = _scalar(
                conn,
                "select percentile_cont(array[0.5, 0.99]) within group (order by ms) from ("
                " select extract(epoch from max(recorded_at) filter (where type = 'JobStarted')"
                "   - min(recorded_at)) * 1000 as ms"
                " from events where position > %s and type in ('JobSubmitted', 'JobStarted')"
                " group by stream_id) s",
                (first_position,),
            )
            print(
                f"load: {SUITES} suites x {SUITE_JOBS} jobs every {SUITE_EVERY_S} s "
                f"(test {TEST_S} s): drained in {busy_s:.1f} s; {assigned} jobs assigned "
                f"by {claims} claim attempts ({claims / busy_s:.0f}/s)"
            )
            print(f"load: submit→start p50 {p50:.0f} ms, p99 {p99:.0f} ms")
            print(
                f"load: PostgreSQL used {100 * busy_cpu / busy_s:.0f} % of one core, "
                f"the agents' processes {100 * busy_agents_cpu / busy_s:.0f} %"
            )
    finally:
        stop.set()
        for process in processes:
            process.join(120)
    print(
        f"RESULT agents={AGENTS} slots={slots} poll_s={POLL_S:g}"
        f" connections_per_agent={connections / AGENTS:.1f}"
        f" idle_cpu_pct={idle_pct:.1f} claims_per_job={one_job} claims_per_s={claims / busy_s:.0f}"
        f" submit_to_start_p99_ms={p99:.0f}"
    )


def main() -> None:
    if os.environ.get(DATABASE_URL_ENV):
        with bench_database() as url:
            _measure(url)
        return
    with tempfile.TemporaryDirectory(prefix="qgjob-fleet-") as data_dir:
        os.chmod(data_dir, 0o755)
        cluster = EmbeddedCluster(
            Path(data_dir) / "pg",
            settings={
                "max_connections": str(AGENTS * CONNECTIONS_PER_AGENT_ROOM + 50),
                "shared_preload_libraries": "pg_stat_statements",
            },
        )
        cluster.start()
        try:
            with bench_database(Path(data_dir)) as url:
                _measure(url)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
