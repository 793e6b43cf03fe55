"""The job endpoints: submit, read, list, wait, cancel, timelines, runs, groups, devices."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from http_api import reads
from http_api.blob_references import claim_references
from http_api.cancel import cancel
from http_api.errors import ApiError
from http_api.inputs import (
    json_object,
    path_uuid,
    query_choice,
    query_int,
    query_number,
    query_text,
    query_uuid,
)
from http_api.services import Services, services
from http_api.submit import MAX_IDEMPOTENCY_KEY, parse, submit
from http_api.views import (
    JOB_STATUSES,
    Json,
    decode_cursor,
    encode_cursor,
    event_document,
    run_document,
)
from ledger.decisions import TERMINAL
from ledger.store import read_stream

__all__ = [
    "cancel_job",
    "cancel_reason",
    "get_job",
    "get_run",
    "job_events",
    "list_devices",
    "list_groups",
    "list_jobs",
    "request_id",
    "submit_jobs",
]

_MAX_REASON = 500


async def cancel_reason(request: Request, default: str) -> str:
    """The ``reason`` of a cancel request's optional body, or *default*."""
    body = await json_object(request, optional=True)
    unknown = sorted(set(body) - {"reason"})
    if unknown:
        raise ApiError(400, "invalid_field", f"unknown field {unknown[0]!r}", field=unknown[0])
    reason = body.get("reason", default)
    if not isinstance(reason, str) or not 0 < len(reason) <= _MAX_REASON:
        raise ApiError(
            400, "invalid_field", f"reason must be 1 to {_MAX_REASON} characters", field="reason"
        )
    return reason


def request_id(request: Request) -> str | None:
    return request.headers.get("x-request-id", "")[:200] or None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalid_header",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            field="Idempotency-Key",
        )
    return key


async def submit_jobs(request: Request) -> JSONResponse:
    """Submit one job (test_path) or a suite (tests), which gets a run id."""
    app = services(request)
    caller = await app.auth.caller(request)
    body = await json_object(request)
    requested_org = body.get("org_id")
    org_id = caller.org_for_write(requested_org if isinstance(requested_org, str) else None)
    submit_request = parse(body, org_id)
    key = _idempotency_key(request)
    await claim_references(app.blobs, submit_request.jobs)
    async with app.pool.connection() as conn:
        result = await submit(
            conn,
            submit_request,
            grouping=app.grouping,
            actor=caller.actor,
            idempotency_key=key,
            request_id=request_id(request),
        )
    return JSONResponse(result.document(), status_code=201 if result.created else 200)


async def _long_poll(
    app: Services,
    request: Request,
    read: Callable[[], Awaitable[Json | None]],
    finished: Callable[[Json], bool],
) -> Json | None:
    """Read, and while ``?wait=`` allows and it is not finished, read again on each change."""
    wait_s = query_number(request, "wait", high=app.settings.max_wait_s)
    deadline = time.monotonic() + wait_s
    while True:
        # Taken before reading, so a change landing during the read still wakes the wait.
        ticket = app.changes.ticket()
        document = await read()
        remaining = deadline - time.monotonic()
        if document is None or finished(document) or remaining <= 0:
            return document
        await app.changes.wait(ticket, remaining)


async def get_job(request: Request) -> JSONResponse:
    """A job; ``?wait=N`` holds the answer until the job has ended or N seconds passed."""
    app = services(request)
    caller = await app.auth.caller(request)
    job_id = path_uuid(request, "job_id")
    org_id = caller.org_for_read(request)

    async def read() -> Json | None:
        async with app.pool.connection() as conn:
            return await reads.job(conn, job_id, org_id)

    document = await _long_poll(app, request, read, lambda job: job["status"] in TERMINAL)
    if document is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}", field="job_id")
    return JSONResponse(document)


async def list_jobs(request: Request) -> JSONResponse:
    """Jobs, newest first, filtered and keyset-paginated with ``cursor``."""
    app = services(request)
    caller = await app.auth.caller(request)
    cursor = query_text(request, "cursor", max_len=500)
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as error:
        raise ApiError(400, "invalid_query", str(error), field="cursor") from None
    where = reads.JobFilter(
        org_id=caller.org_for_read(request),
        status=query_choice(request, "status", JOB_STATUSES),
        app_version_id=query_text(request, "app_version_id"),
        run_id=query_uuid(request, "run_id"),
        after=after,
    )
    limit = query_int(request, "limit", default=50, low=1, high=500)
    async with app.pool.connection() as conn:
        page, more = await reads.jobs_page(conn, where, limit)
    next_cursor = encode_cursor(page[-1]) if more else None
    return JSONResponse({"jobs": page, "next_cursor": next_cursor})


async def job_events(request: Request) -> JSONResponse:
    """The job's timeline: every event of its stream, in order."""
    app = services(request)
    caller = await app.auth.caller(request)
    job_id = path_uuid(request, "job_id")
    org_id = caller.org_for_read(request)
    async with app.pool.connection() as conn:
        recorded = await read_stream(conn, job_id)
    if not recorded or (org_id is not None and recorded[0].metadata.org_id != org_id):
        raise ApiError(404, "job_not_found", f"no job {job_id}", field="job_id")
    return JSONResponse({"events": [event_document(entry) for entry in recorded]})


async def cancel_job(request: Request) -> JSONResponse:
    """Cancel a job; a job that has already ended is returned unchanged."""
    app = services(request)
    caller = await app.auth.caller(request)
    job_id = path_uuid(request, "job_id")
    org_id = caller.org_for_read(request)
    reason = await cancel_reason(request, "cancelled by user")
    async with app.pool.connection() as conn:
        document, cancelled = await cancel(
            conn,
            job_id,
            org_id=org_id,
            actor=caller.actor,
            reason=reason,
            request_id=request_id(request),
        )
    if cancelled:
        app.notifier.poke()
    return JSONResponse(document)


async def get_run(request: Request) -> JSONResponse:
    """A suite's jobs and counts by status; ``?wait=N`` holds it until every job ended."""
    app = services(request)
    caller = await app.auth.caller(request)
    run_id = path_uuid(request, "run_id")
    org_id = caller.org_for_read(request)

    async def read() -> Json | None:
        async with app.pool.connection() as conn:
            jobs = await reads.run(conn, run_id, org_id)
        return None if jobs is None else run_document(run_id, jobs)

    document = await _long_poll(app, request, read, lambda run: bool(run["done"]))
    if document is None:
        raise ApiError(404, "run_not_found", f"no run {run_id}", field="run_id")
    return JSONResponse(document)


async def list_groups(request: Request) -> JSONResponse:
    """Groups of jobs that share a device install, most recently active first."""
    app = services(request)
    caller = await app.auth.caller(request)
    org_id = caller.org_for_read(request)
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    async with app.pool.connection() as conn:
        groups = await reads.groups(conn, org_id, limit)
    return JSONResponse({"groups": groups})


async def list_devices(request: Request) -> JSONResponse:
    """Device slots: target, state, installed apps and the group each works on."""
    app = services(request)
    caller = await app.auth.caller(request)
    org_id = caller.org_for_read(request)
    async with app.pool.connection() as conn:
        devices = await reads.devices(conn, org_id)
    return JSONResponse({"devices": devices})
