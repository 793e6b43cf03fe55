"""The dashboard's JSON routes: runs, one run, the device timeline, and devices.

Each answers for the caller's organisation only (every organisation in local mode). The
pages (http_api/static/dashboard.js) read them again whenever the change stream says the
projections moved on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, LiteralString
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from http_api import reads
from http_api.dashboard_timeline import bars, utilisation
from http_api.errors import ApiError
from http_api.inputs import path_uuid, query_int, query_uuid
from http_api.services import services
from http_api.views import Json, jsonable, run_document
from ledger.decisions import TERMINAL
from ledger.sqlfile import load_queries
from ledger.timeline import device_activity, run_activity

__all__ = ["devices_view", "run_view", "runs_view", "timeline_view"]

_QUERIES = load_queries(Path(__file__).with_name("dashboard.sql"))
_HOUR_S = 3600
Conn = psycopg.AsyncConnection[Any]


async def _rows(conn: Conn, query: LiteralString, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def runs_view(request: Request) -> JSONResponse:
    """Recent runs, newest first, each with its jobs by status."""
    app = services(request)
    org_id = (await app.auth.caller(request)).org_for_read(request)
    limit = query_int(request, "limit", default=50, low=1, high=500)
    async with app.pool.connection() as conn:
        rows = await _rows(conn, _QUERIES["runs"], {"org_id": org_id, "limit": limit})
    return JSONResponse({"generated_at": _now().isoformat(), "runs": [jsonable(r) for r in rows]})


def _profile(job: Json) -> tuple[str, str, str, str]:
    return (job["target"], job["platform"] or "", job["device"] or "", job["os_version"] or "")


def _profiles(jobs: Sequence[Json]) -> list[Json]:
    """The run's jobs by device profile (target, platform, device, OS version)."""
    counts: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for job in jobs:
        by_status = counts.setdefault(_profile(job), {})
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
    return [
        {
            "target": target,
            "platform": platform or None,
            "device": device or None,
            "os_version": os_version or None,
            "jobs": sum(by_status.values()),
            "counts": by_status,
        }
        for (target, platform, device, os_version), by_status in sorted(counts.items())
    ]


async def run_view(request: Request) -> JSONResponse:
    """One run: progress, its jobs with their per-test results, and a per-profile breakdown."""
    app = services(request)
    org_id = (await app.auth.caller(request)).org_for_read(request)
    run_id = path_uuid(request, "run_id")
    async with app.pool.connection() as conn:
        jobs = await reads.run(conn, run_id, org_id)
    if jobs is None:
        raise ApiError(404, "run_not_found", f"no run {run_id}", field="run_id")
    document = run_document(run_id, jobs)
    ended = sum(1 for job in jobs if job["status"] in TERMINAL)
    finished = [job["finished_at"] for job in jobs if job["finished_at"]]
    first = jobs[0]
    document.update(
        generated_at=_now().isoformat(),
        org_id=first["org_id"],
        repo=first["repo"],
        commit=first["commit"],
        build=first["build"],
        submitted_at=min(job["submitted_at"] for job in jobs),
        finished_at=max(finished) if document["done"] and finished else None,
        progress=ended / len(jobs),
        profiles=_profiles(jobs),
    )
    return JSONResponse(document)


async def _window(
    conn: Conn, request: Request, org_id: str | None
) -> tuple[dt.datetime, dt.datetime, dict[str, Any] | None]:
    """The timeline's window, and the run it shows: a run's span when ?run= names one,
    else the last ?window= seconds (an hour by default)."""
    now = _now()
    run_id = query_uuid(request, "run")
    if run_id is None:
        seconds = query_int(request, "window", default=_HOUR_S, low=60, high=7 * 24 * _HOUR_S)
        return now - dt.timedelta(seconds=seconds), now, None
    rows = await _rows(conn, _QUERIES["run_window"], {"run_id": run_id, "org_id": org_id})
    if not rows or rows[0]["since"] is None:
        raise ApiError(404, "run_not_found", f"no run {run_id}", field="run")
    window = rows[0]
    until = window["until"] if window["done"] else now
    return window["since"], max(until, window["since"] + dt.timedelta(seconds=1)), window


async def _label(conn: Conn, drawn: list[Json]) -> None:
    """Name each attempt bar's test and run."""
    job_ids = list({UUID(bar["job_id"]) for bar in drawn if bar["kind"] == "attempt"})
    labels = {
        str(row["job_id"]): row
        for row in await _rows(conn, _QUERIES["job_labels"], {"job_ids": job_ids})
    }
    for bar in drawn:
        if (label := labels.get(bar.get("job_id", ""))) is not None:
            bar.update(test_path=label["test_path"], run_id=jsonable(label["run_id"]))


async def _lanes(conn: Conn, org_id: str | None, drawn: list[Json]) -> list[Json]:
    """The slots the caller's organisation used, those with bars here among them."""
    used = list({UUID(bar["device_id"]) for bar in drawn})
    lanes = await _rows(conn, _QUERIES["dashboard_devices"], {"org_id": org_id, "also": used})
    return [jsonable(lane) for lane in lanes]


async def timeline_view(request: Request) -> JSONResponse:
    """The device timeline: one lane per slot, bars for installs and attempts."""
    app = services(request)
    org_id = (await app.auth.caller(request)).org_for_read(request)
    async with app.pool.connection() as conn:
        since, until, run = await _window(conn, request, org_id)
        if run is None:
            activity = await device_activity(conn, since, until, org_id)
        else:
            activity = await run_activity(conn, run["job_ids"], run["group_ids"] or ())
        drawn = bars(activity)
        await _label(conn, drawn)
        lanes = await _lanes(conn, org_id, drawn)
    if run is not None:
        used = {bar["device_id"] for bar in drawn}
        lanes = [lane for lane in lanes if lane["device_id"] in used]
    return JSONResponse(
        {
            "generated_at": _now().isoformat(),
            "since": since.isoformat(),
            "until": until.isoformat(),
            "lanes": lanes,
            "bars": drawn,
        }
    )


async def devices_view(request: Request) -> JSONResponse:
    """Slots: what they offer, state, installed apps, utilisation over the last hour; and
    the queue by target and device profile."""
    app = services(request)
    org_id = (await app.auth.caller(request)).org_for_read(request)
    until = _now()
    since = until - dt.timedelta(seconds=_HOUR_S)
    async with app.pool.connection() as conn:
        drawn = bars(await device_activity(conn, since, until, org_id))
        lanes = await _lanes(conn, org_id, drawn)
        queue = await _rows(conn, _QUERIES["queue_by_profile"], {"org_id": org_id})
    busy = utilisation(drawn, since, until)
    for lane in lanes:
        lane["utilisation"] = busy.get(lane["device_id"], 0.0)
    return JSONResponse({"generated_at": until.isoformat(), "devices": lanes, "queue": queue})
