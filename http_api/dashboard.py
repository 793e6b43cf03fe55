"""The live dashboard: a static page and its files, a JSON snapshot, and event streams.

``/events/stream`` sends a fresh snapshot whenever the projections change (see
changes.py), at most a few times a second, and a keep-alive comment while nothing
happens. ``/dashboard/changes`` sends only a ``changed`` event, on which each page reads
its own JSON route (http_api/dashboard_views.py) again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse

from http_api import reads
from http_api.services import Services, services
from http_api.views import Json
from ledger.sqlfile import load_queries

__all__ = ["STATIC_DIR", "changes", "page", "snapshot", "stream"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_PAGE = Path(__file__).with_name("dashboard.html").read_text()
#: The page's script and style sheet, served as they are: no build step.
STATIC_DIR = Path(__file__).with_name("static")
_RECENT = 25
#: Fewest seconds between two snapshots on one stream: bursts of changes are coalesced.
_MIN_INTERVAL_S = 0.25
_KEEPALIVE_S = 15.0
_RETRY_S = 2.0
_log = logging.getLogger(__name__)


async def _snapshot(conn: psycopg.AsyncConnection[Any], org_id: str | None) -> Json:
    params = {"org_id": org_id}
    counts = await (await conn.execute(_QUERIES["status_counts"], params)).fetchall()
    queue = await (await conn.execute(_QUERIES["queue_by_target"], params)).fetchall()
    recent, _ = await reads.jobs_page(conn, reads.JobFilter(org_id=org_id), _RECENT)
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "org_id": org_id,
        "counts": dict(counts),
        "queue": [{"target": t, "status": s, "depth": d} for t, s, d in queue],
        "groups": await reads.groups(conn, org_id, _RECENT),
        "devices": await reads.devices(conn, org_id),
        "jobs": recent,
    }


async def page(_: Request) -> HTMLResponse:
    """The live dashboard page (HTML); it reads the snapshot and the event stream."""
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


async def snapshot(request: Request) -> JSONResponse:
    """What the dashboard shows: counts by status, queue by target, groups, devices, jobs."""
    app = services(request)
    caller = await app.auth.caller(request)
    org_id = caller.org_for_read(request)
    async with app.pool.connection() as conn:
        return JSONResponse(await _snapshot(conn, org_id))


async def _snapshots(app: Services, org_id: str | None) -> AsyncIterator[str]:
    send_now = True
    while True:
        if send_now:
            ticket = app.changes.ticket()
            try:
                async with app.pool.connection() as conn:
                    document = await _snapshot(conn, org_id)
            except psycopg.Error as error:
                _log.warning("dashboard stream cannot read the projections: %s", error)
                yield ": database unavailable\n\n"
                await asyncio.sleep(_RETRY_S)
                continue
            yield f"event: snapshot\ndata: {json.dumps(document)}\n\n"
        send_now = await app.changes.wait(ticket, _KEEPALIVE_S)
        if send_now:
            await asyncio.sleep(_MIN_INTERVAL_S)
        else:
            yield ": keep-alive\n\n"


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream(request: Request) -> StreamingResponse:
    """Server-sent events: a ``snapshot`` event now and whenever the projections change."""
    app = services(request)
    caller = await app.auth.caller(request)
    org_id = caller.org_for_read(request)
    return _event_stream(_snapshots(app, org_id))


async def _changed(app: Services) -> AsyncIterator[str]:
    yield "event: changed\ndata: {}\n\n"
    while True:
        ticket = app.changes.ticket()
        if await app.changes.wait(ticket, _KEEPALIVE_S):
            yield "event: changed\ndata: {}\n\n"
            await asyncio.sleep(_MIN_INTERVAL_S)
        else:
            yield ": keep-alive\n\n"


async def changes(request: Request) -> StreamingResponse:
    """Server-sent events: ``changed`` now and whenever the projections change."""
    app = services(request)
    caller = await app.auth.caller(request)
    caller.org_for_read(request)
    return _event_stream(_changed(app))
