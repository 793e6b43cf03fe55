"""Prometheus metrics: the read model's state at scrape time, and the API's own requests.

The read-model figures come from the projection tables (queue depth counters, the jobs'
durations, devices, the projector's lag), read once per scrape; prometheus-client does
the text format. Request counts and latencies are counted in-process by a middleware.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.decisions import TERMINAL
from ledger.sqlfile import load_queries

__all__ = ["CONTENT_TYPE", "DURATION_BOUNDS", "Metrics", "RequestMetrics"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Bucket bounds, in seconds, of the job duration histogram.
DURATION_BOUNDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@attrs.frozen(kw_only=True)
class _ReadModel:
    queue_depth: list[tuple[str, str, str, int]]
    #: (target, status, bucket index, jobs, total seconds); see the job_durations query.
    durations: list[tuple[str, str, int, int, float]]
    #: (target, state, devices, lease expiries on them)
    devices: list[tuple[str, str, int, int]]
    #: (target, installs done, installs saved)
    installs: list[tuple[str, int, int]]
    #: (projection, events behind, seconds behind, running)
    lag: list[tuple[str, int, float, bool]]


async def _read_model(conn: psycopg.AsyncConnection[Any], org_id: str | None) -> _ReadModel:
    async def rows(name: str, params: dict[str, Any] | None = None) -> list[Any]:
        cursor = await conn.execute(_QUERIES[name], params)
        return await cursor.fetchall()

    return _ReadModel(
        queue_depth=await rows("queue_depth_all", {"org_id": org_id}),
        durations=await rows(
            "job_durations", {"bounds": list(DURATION_BOUNDS), "org_id": org_id}
        ),
        devices=await rows("device_states"),
        installs=await rows("install_savings"),
        lag=await rows("projector_lag"),
    )


def _duration_histograms(durations: Iterable[tuple[str, str, int, int, float]]) -> Metric:
    family = HistogramMetricFamily(
        "qgjob_job_duration_seconds",
        "How long finished jobs ran, by target and outcome.",
        labels=["target", "status"],
    )
    per_series: dict[tuple[str, str], tuple[list[int], float]] = {}
    for target, status, bucket, jobs, total_s in durations:
        counts, total = per_series.get((target, status), ([0] * (len(DURATION_BOUNDS) + 1), 0.0))
        counts[bucket] += jobs
        per_series[(target, status)] = (counts, total + total_s)
    for (target, status), (counts, total) in sorted(per_series.items()):
        cumulative, buckets = 0, []
        for bound, count in zip((*DURATION_BOUNDS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric([target, status], buckets, total)
    return family


class _ReadModelCollector(Collector):
    """Yields the figures of the last snapshot read; the scrape reads one just before."""

    def __init__(self) -> None:
        self.snapshot: _ReadModel | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        depth = GaugeMetricFamily(
            "qgjob_queue_depth",
            "Jobs waiting or running, by organisation, target and status.",
            labels=["org", "target", "status"],
        )
        finished = CounterMetricFamily(
            "qgjob_jobs_finished",
            "Jobs that ended, by organisation, target and final status.",
            labels=["org", "target", "status"],
        )
        for org, target, status, jobs in snapshot.queue_depth:
            family = finished if status in TERMINAL else depth
            family.add_metric([org, target, status], jobs)
        yield depth
        yield finished
        yield _duration_histograms(snapshot.durations)
        devices = GaugeMetricFamily(
            "qgjob_devices", "Device slots by target and state.", labels=["target", "state"]
        )
        expiries = CounterMetricFamily(
            "qgjob_lease_expiries",
            "Job attempts lost because their agent stopped renewing its lease, by target.",
            labels=["target"],
        )
        expired_by_target: dict[str, int] = {}
        for target, state, count, expired in snapshot.devices:
            devices.add_metric([target, state], count)
            expired_by_target[target] = expired_by_target.get(target, 0) + expired
        for target, expired in expired_by_target.items():
            expiries.add_metric([target], expired)
        yield devices
        yield expiries
        installs = CounterMetricFamily(
            "qgjob_installs", "App installs done, by target.", labels=["target"]
        )
        saved = CounterMetricFamily(
            "qgjob_installs_saved",
            "Installs grouping avoided: attempts that found their app already installed.",
            labels=["target"],
        )
        for target, done, avoided in snapshot.installs:
            installs.add_metric([target], done)
            saved.add_metric([target], avoided)
        yield installs
        yield saved
        lag_events = GaugeMetricFamily(
            "qgjob_projector_lag_events",
            "Events appended that a projector has not applied yet.",
            labels=["projection"],
        )
        lag_seconds = GaugeMetricFamily(
            "qgjob_projector_lag_seconds",
            "Age of the oldest event a projector has not applied yet.",
            labels=["projection"],
        )
        running = GaugeMetricFamily(
            "qgjob_projector_running",
            "1 while a projector of that name is running.",
            labels=["projection"],
        )
        for name, events, seconds, is_running in snapshot.lag:
            lag_events.add_metric([name], events)
            lag_seconds.add_metric([name], seconds)
            running.add_metric([name], 1 if is_running else 0)
        yield lag_events
        yield lag_seconds
        yield running


class Metrics:
    """One registry per app: request metrics, process metrics and the read model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._read_model = _ReadModelCollector()
        self.registry.register(self._read_model)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "qgjob_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "qgjob_http_requests_in_progress",
            "HTTP requests being answered now (long-polls and streams included), by method.",
            ["method"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qgjob_http_request_duration_seconds",
            "Time to answer HTTP requests (long-polls and streams excluded), by route.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    async def render(self, conn: psycopg.AsyncConnection[Any], org_id: str | None) -> bytes:
        """The metrics, with the per-organisation figures of *org_id* alone (of every
        organisation when None)."""
        snapshot = await _read_model(conn, org_id)
        # No await between storing the snapshot and rendering it: no other scrape interleaves.
        self._read_model.snapshot = snapshot
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting requests by route template, not by raw path."""

    #: Routes whose answer time is the client's choice, not the server's speed.
    UNTIMED = frozenset({"/events/stream"})

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = self.metrics.in_progress.labels(scope["method"])
        in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            in_progress.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            waited = "wait=" in scope.get("query_string", b"").decode("latin-1")
            if route not in self.UNTIMED and not waited:
                self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
