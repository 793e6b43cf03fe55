"""Submits per second over HTTP, and submit→running latency at idle.

The API runs as ``uvicorn http_api.app:app`` in a subprocess (one worker, local mode, no
access log) against a fresh database on the embedded cluster (or QGJOB_DATABASE_URL).

Throughput: 1, then 8 client processes, each with one keep-alive connection (stdlib
http.client), POST /jobs single jobs for SECONDS, each with its own Idempotency-Key as
the CLI sends; every test path is distinct, so each submit appends a job.

Latency: on a second fresh database, with a projector process and a ``qgjobd runner``
(4 emulator slots, the simulated executor with zero install and test time) running, one
job is submitted every 10 ms, for two rounds of LATENCY_JOBS jobs. The first round is a
warm-up and is not counted: the first jobs on fresh connections pay for planning their
statements and compiling the functions they call (the very first takes some 25 ms),
which is the cost of a start, not of a submit. A job's latency runs from the client's
clock as its POST leaves (its body and Idempotency-Key already made) to the
``recorded_at`` of its JobStarted event (one host, one clock).

Last line: ``RESULT submit_1=… submit_8=… p50_ms=… p95_ms=… p99_ms=…``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from bench._processes import api_server, total_over_processes, zero_time_pipeline

SECONDS = 5.0
LATENCY_JOBS = 500
LATENCY_GAP_S = 0.010


def _test_path(client: int, index: int) -> str:
    return f"tests/c{client}-{index:06d}.spec.js"


def _body(test_path: str) -> bytes:
    return json.dumps(
        {"org_id": "bench", "app_version_id": "app-1", "test_path": test_path, "target": "emulator"}
    ).encode()


def _post(connection: http.client.HTTPConnection, body: bytes, key: str | None = None) -> None:
    connection.request(
        "POST",
        "/jobs",
        body=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": key or str(uuid.uuid4())},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"submit answered {response.status}")


def _client(port: int, client: int, start_at: float, results: multiprocessing.Queue[int]) -> None:
    """Submit as fast as one connection can; *client* numbers are unique across phases,
    so no submit is a duplicate of a job still open (which is answered 200, not 201)."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    _post(connection, _body(_test_path(client, 0)))  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.monotonic()))
    deadline = start_at + SECONDS
    count = 0
    while time.monotonic() < deadline:
        count += 1
        _post(connection, _body(_test_path(client, count)))
    results.put(count)


def submits_per_second(port: int, clients: int, *, first_client: int = 0) -> float:
    start_at = time.monotonic() + 1.0
    arguments = [(port, first_client + client, start_at) for client in range(clients)]
    return total_over_processes(_client, arguments) / SECONDS


def _started_at(url: str, count: int) -> dict[str, dt.datetime]:
    """The JobStarted time of each job by test path, once *count* of them have started."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "select s.data ->> 'test_path', min(e.recorded_at) from events e"
                " join events s on s.stream_id = e.stream_id and s.version = 1"
                " where e.type = 'JobStarted' group by 1"
            ).fetchall()
            if len(rows) >= count or time.monotonic() > deadline:
                return {path: at for path, at in rows}
            time.sleep(0.2)


_STAGES = ("JobSubmitted", "JobGrouped", "JobAssigned", "JobStarted")


def _stage_medians_ms(url: str) -> dict[str, float]:
    """The median time from each stage to the next, over the jobs that started."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select stream_id, type, min(recorded_at) from events"
            " where type = any(%s) group by 1, 2",
            (list(_STAGES),),
        ).fetchall()
    times: dict[object, dict[str, dt.datetime]] = {}
    for stream_id, type_name, at in rows:
        times.setdefault(stream_id, {})[type_name] = at
    medians = {}
    for before, after in itertools.pairwise(_STAGES):
        gaps = [
            (job[after] - job[before]).total_seconds() * 1000
            for job in times.values()
            if before in job and after in job
        ]
        medians[f"{before}→{after}"] = statistics.median(gaps) if gaps else float("nan")
    return medians


def _submit_paced(connection: http.client.HTTPConnection, client: int) -> dict[str, dt.datetime]:
    """Submit LATENCY_JOBS jobs, one per LATENCY_GAP_S; return when each was sent, by path."""
    sent: dict[str, dt.datetime] = {}
    next_at = time.monotonic()
    for index in range(LATENCY_JOBS):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += LATENCY_GAP_S
        test_path = _test_path(client, index)
        body, key = _body(test_path), str(uuid.uuid4())
        # Stamped as the request leaves: the client's own work is not the submit's latency.
        sent[test_path] = dt.datetime.now(dt.UTC)
        _post(connection, body, key)
    return sent


def latencies_ms(url: str, port: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    with zero_time_pipeline(url, 4):
        time.sleep(2.0)  # let the runner register its slots and go idle
        _submit_paced(connection, 98)  # the warm-up round, not counted
        sent = _submit_paced(connection, 99)
        started = _started_at(url, 2 * LATENCY_JOBS)
    missing = sum(1 for path in sent if path not in started)
    if missing:
        print(f"{missing} of {len(sent)} jobs had not started within 60 s", file=sys.stderr)
    stages = ", ".join(f"{name} {ms:.1f} ms" for name, ms in _stage_medians_ms(url).items())
    print(f"median per stage: {stages}")
    return [
        (started[path] - at).total_seconds() * 1000 for path, at in sent.items() if path in started
    ]


def _percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def main() -> None:
    with bench_database() as url, api_server(url) as (port, _):
        one = submits_per_second(port, 1)
        print(f"1 client:  {one:,.0f} submits/s")
        eight = submits_per_second(port, 8, first_client=1)
        print(f"8 clients: {eight:,.0f} submits/s")
    with bench_database() as url, api_server(url) as (port, _):
        latency = latencies_ms(url, port)
    p50, p95, p99 = (_percentile(latency, share) for share in (0.50, 0.95, 0.99))
    print(
        f"submit→running at one job per {LATENCY_GAP_S * 1000:g} ms, {len(latency)} jobs: "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"
    )
    print(
        f"RESULT submit_1={one:.0f} submit_8={eight:.0f} "
        f"p50_ms={p50:.1f} p95_ms={p95:.1f} p99_ms={p99:.1f}"
    )


if __name__ == "__main__":
    main()
