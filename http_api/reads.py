"""The read side of the API: jobs, runs, groups and devices from the projection tables.

Rows the projector has not written yet (a job submitted a moment ago) are filled in from
the job's own stream, which is the one read of events the API makes. A waiting job says
why no device can take it, if none can (the ``queue`` view's reason).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, LiteralString
from uuid import UUID

import attrs
import psycopg
from psycopg.rows import dict_row

from http_api.views import Json, job_from_history, job_from_row, jsonable
from http_api.waiting import wait_reason
from ledger.decisions import JobStatus
from ledger.sqlfile import load_queries
from ledger.store import read_stream

__all__ = [
    "JobFilter",
    "devices",
    "groups",
    "job",
    "jobs",
    "jobs_page",
    "run",
    "superseded_jobs",
    "test_history",
]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_WAITING = frozenset({JobStatus.SUBMITTED, JobStatus.GROUPED, JobStatus.RETRYING})
Conn = psycopg.AsyncConnection[Any]


async def _rows(conn: Conn, query: LiteralString, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def _from_stream(conn: Conn, job_id: UUID, org_id: str | None) -> Json | None:
    events = await read_stream(conn, job_id)
    history = [(recorded.event, recorded.recorded_at) for recorded in events]
    folded = job_from_history(job_id, history)
    if folded is None or (org_id is not None and folded["org_id"] != org_id):
        return None
    return folded


async def job(conn: Conn, job_id: UUID, org_id: str | None) -> Json | None:
    """The job, if it exists and belongs to *org_id* (any org when None); a job that
    waits for a device says what holds it (``waiting``)."""
    rows = await _rows(conn, _QUERIES["job"], {"job_id": job_id, "org_id": org_id})
    document = job_from_row(rows[0]) if rows else await _from_stream(conn, job_id, org_id)
    if document is not None:
        await _add_waiting(conn, [document])
    return document


async def jobs(conn: Conn, job_ids: Sequence[UUID], org_id: str | None) -> list[Json]:
    """The jobs with these ids, in this order; ones that do not exist are left out."""
    rows = await _rows(conn, _QUERIES["jobs_by_id"], {"job_ids": list(job_ids)})
    found = {row["job_id"]: job_from_row(row) for row in rows}
    result = []
    for job_id in job_ids:
        document = found.get(job_id) or await _from_stream(conn, job_id, None)
        if document is not None and (org_id is None or document["org_id"] == org_id):
            result.append(document)
    await _add_waiting(conn, result)
    return result


async def _add_waiting(conn: Conn, documents: list[Json]) -> None:
    """Say, in each waiting job's document, what holds it (http_api/waiting.py)."""
    waiting = {doc["job_id"]: doc for doc in documents if doc["status"] in _WAITING}
    if not waiting:
        return
    for row in await _rows(conn, _QUERIES["job_waits"], {"job_ids": list(waiting)}):
        waiting[str(row["job_id"])]["waiting"] = wait_reason(row)


async def run(conn: Conn, run_id: UUID, org_id: str | None) -> list[Json] | None:
    """The jobs of a run, or None if there is no such run for *org_id*."""
    async with conn.cursor() as cursor:
        await cursor.execute(_QUERIES["submission_of_run"], {"run_id": run_id})
        submission = await cursor.fetchone()
    if submission is not None:
        owner, job_ids = submission
        if org_id is not None and owner != org_id:
            return None
        return await jobs(conn, job_ids, org_id)
    # A run appended by something other than the API is known from the projection alone.
    rows = await _rows(conn, _QUERIES["jobs_of_run"], {"run_id": run_id, "org_id": org_id})
    return [job_from_row(row) for row in rows] or None


@attrs.frozen(kw_only=True)
class JobFilter:
    org_id: str | None = None
    status: str | None = None
    app_version_id: str | None = None
    run_id: UUID | None = None
    #: Where the previous page ended: the last job's (submitted_at, job_id).
    after: tuple[dt.datetime, UUID] | None = None


async def jobs_page(conn: Conn, where: JobFilter, limit: int) -> tuple[list[Json], bool]:
    """Up to *limit* jobs, newest first, and whether more follow."""
    after_at, after_id = where.after or (None, None)
    params = {
        "org_id": where.org_id,
        "status": where.status,
        "app_version_id": where.app_version_id,
        "run_id": where.run_id,
        "after_at": after_at,
        "after_id": after_id,
        "limit": limit + 1,
    }
    rows = await _rows(conn, _QUERIES["jobs_page"], params)
    return [job_from_row(row) for row in rows[:limit]], len(rows) > limit


async def groups(conn: Conn, org_id: str | None, limit: int) -> list[Json]:
    rows = await _rows(conn, _QUERIES["groups"], {"org_id": org_id, "limit": limit})
    return [jsonable(row) for row in rows]


async def devices(conn: Conn, org_id: str | None) -> list[Json]:
    rows = await _rows(conn, _QUERIES["devices"], {"org_id": org_id})
    return [jsonable(row) for row in rows]


async def superseded_jobs(
    conn: Conn, org_id: str, supersede_key: str, run_id: UUID, before: dt.datetime
) -> list[Json]:
    """The unfinished jobs of *org_id*'s other runs with this key, submitted before *before*."""
    params = {"org_id": org_id, "supersede_key": supersede_key, "run_id": run_id, "before": before}
    rows = await _rows(conn, _QUERIES["superseded_jobs"], params)
    return [jsonable(row) for row in rows]


async def test_history(
    conn: Conn, org_id: str | None, *, flaky_only: bool, limit: int
) -> list[Json]:
    params = {"org_id": org_id, "flaky_only": flaky_only, "limit": limit}
    rows = await _rows(conn, _QUERIES["test_history"], params)
    return [jsonable(row) for row in rows]
