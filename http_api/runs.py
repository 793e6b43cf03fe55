"""Run-level control: cancel a run, and let a newer run supersede older ones.

Each job is cancelled on its own history (http_api/cancel.py), so a job that ends while
its run is being cancelled keeps its verdict; the run's answer shows every job as it is.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse

from http_api import reads
from http_api.cancel import cancel
from http_api.errors import ApiError
from http_api.inputs import path_uuid
from http_api.jobs import cancel_reason, request_id
from http_api.services import services
from http_api.views import Json, run_document
from ledger.decisions import TERMINAL

__all__ = ["cancel_run", "supersede_runs"]


async def _run_jobs(
    conn: psycopg.AsyncConnection[Any], run_id: UUID, org_id: str | None
) -> list[Json]:
    jobs = await reads.run(conn, run_id, org_id)
    if jobs is None:
        raise ApiError(404, "run_not_found", f"no run {run_id}", field="run_id")
    return jobs


async def _cancel_each(
    conn: psycopg.AsyncConnection[Any],
    jobs: list[Json],
    *,
    org_id: str | None,
    actor: str,
    reason: str,
    request: Request,
) -> tuple[list[Json], list[Json]]:
    """Cancel the jobs that have not ended; return every job as it now is, and those cancelled."""
    documents, cancelled = [], []
    for job in jobs:
        if job["status"] in TERMINAL:
            documents.append(job)
            continue
        document, changed = await cancel(
            conn,
            UUID(job["job_id"]),
            org_id=org_id,
            actor=actor,
            reason=reason,
            request_id=request_id(request),
        )
        documents.append(document)
        if changed:
            cancelled.append(document)
    return documents, cancelled


async def cancel_run(request: Request) -> JSONResponse:
    """Cancel every job of the run that has not ended, even mid-run."""
    app = services(request)
    caller = await app.auth.caller(request)
    run_id = path_uuid(request, "run_id")
    org_id = caller.org_for_read(request)
    reason = await cancel_reason(request, "run cancelled by user")
    async with app.pool.connection() as conn:
        jobs = await _run_jobs(conn, run_id, org_id)
        documents, cancelled = await _cancel_each(
            conn, jobs, org_id=org_id, actor=caller.actor, reason=reason, request=request
        )
    if cancelled:
        app.notifier.poke()
    return JSONResponse(run_document(run_id, documents))


async def supersede_runs(request: Request) -> JSONResponse:
    """Cancel the unfinished jobs of older runs of the organisation with this run's key.

    Older means submitted before this run's first job. Jobs the projector has not applied
    yet are not seen: a run submitted a moment before this one may escape.
    """
    app = services(request)
    caller = await app.auth.caller(request)
    run_id = path_uuid(request, "run_id")
    org_id = caller.org_for_read(request)
    async with app.pool.connection() as conn:
        jobs = await _run_jobs(conn, run_id, org_id)
        key = next((job["supersede_key"] for job in jobs if job.get("supersede_key")), None)
        if key is None:
            raise ApiError(
                409,
                "no_supersede_key",
                f"run {run_id} was submitted without a supersede_key",
                field="supersede_key",
            )
        owner = str(jobs[0]["org_id"])
        before = min(dt.datetime.fromisoformat(job["submitted_at"]) for job in jobs)
        older = await reads.superseded_jobs(conn, owner, key, run_id, before)
        _, cancelled = await _cancel_each(
            conn,
            older,
            org_id=owner,
            actor=caller.actor,
            reason=f"superseded by run {run_id} ({key})",
            request=request,
        )
    if cancelled:
        app.notifier.poke()
    return JSONResponse({"run_id": str(run_id), "supersede_key": key, "cancelled": cancelled})
