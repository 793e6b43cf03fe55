"""What happened on device slots over a window of time, read from the ledger by time.

The dashboard's device timeline (http_api/dashboard_timeline.py) draws its bars from
these: installs, and each attempt from its assignment to its verdict. Only the fields a
bar needs are read, not whole events, so a busy hour is read without decoding it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from pathlib import Path
from typing import Any, LiteralString
from uuid import UUID

import attrs
import psycopg
from psycopg.rows import class_row

from ledger.sqlfile import load_queries

__all__ = ["Activity", "device_activity", "run_activity"]

_QUERIES = load_queries(Path(__file__).with_name("timeline.sql"))


@attrs.frozen(kw_only=True)
class Activity:
    """One event that starts, ends or installs something on a device slot."""

    recorded_at: dt.datetime
    #: The event type, e.g. JobAssigned or AppInstalled.
    type: str
    #: The job's id, or the device's for an install.
    stream_id: UUID
    #: The slot, for an assignment or an install; other job events name none.
    device_id: UUID | None
    attempt: int | None
    app_version_id: str | None
    group_id: UUID | None
    #: A JobFailed's failure kind.
    kind: str | None
    handed_back: bool
    org_id: str


async def device_activity(
    conn: psycopg.AsyncConnection[Any],
    since: dt.datetime,
    until: dt.datetime,
    org_id: str | None,
) -> list[Activity]:
    """The window's activity of *org_id* (every org when None), oldest first, preceded
    by the assignments of attempts that began before the window and go on in it."""
    params = {"since": since, "until": until, "org_id": org_id}
    window = await _activity(conn, _QUERIES["device_activity"], params)
    assigned = {(a.stream_id, a.attempt) for a in window if a.type == "JobAssigned"}
    unassigned: Collection[UUID] = {
        a.stream_id
        for a in window
        if a.type != "JobAssigned"
        and a.type != "AppInstalled"
        and (a.stream_id, a.attempt) not in assigned
    }
    if not unassigned:
        return window
    earlier = await _activity(
        conn, _QUERIES["assignments_before"], {"job_ids": list(unassigned), "since": since}
    )
    return earlier + window


async def run_activity(
    conn: psycopg.AsyncConnection[Any], job_ids: Collection[UUID], group_ids: Collection[UUID]
) -> list[Activity]:
    """The activity of these jobs, and the installs done for these groups, oldest first."""
    params = {"job_ids": list(job_ids), "group_ids": list(group_ids)}
    return await _activity(conn, _QUERIES["run_activity"], params)


async def _activity(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: dict[str, Any]
) -> list[Activity]:
    async with conn.cursor(row_factory=class_row(Activity)) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()
