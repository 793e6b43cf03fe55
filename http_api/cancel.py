"""Cancelling a job: decide on the job's own history, append at the version it was read at.

A runner may append to the job between our read and our append; the append then loses
with ConcurrencyConflict and the decision is made again on the new history.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from http_api.errors import ApiError
from http_api.views import Json, job_from_history
from ledger.decisions import TERMINAL, JobStatus, decide, fold
from ledger.errors import ConcurrencyConflict
from ledger.events import JobCancelled, Metadata
from ledger.store import append, read_stream

__all__ = ["cancel"]

_ATTEMPTS = 5
_ON_DEVICE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})


async def cancel(
    conn: psycopg.AsyncConnection[Any],
    job_id: UUID,
    *,
    org_id: str | None,
    actor: str,
    reason: str,
    request_id: str | None,
) -> tuple[Json, bool]:
    """Cancel the job; return it and whether this call cancelled it.

    A job that already ended is returned as it is. Raises ApiError 404 when the job does
    not exist or belongs to another organisation than *org_id*.
    """
    for _ in range(_ATTEMPTS):
        recorded = await read_stream(conn, job_id)
        history = [(entry.event, entry.recorded_at) for entry in recorded]
        job = job_from_history(job_id, history)
        if job is None or (org_id is not None and job["org_id"] != org_id):
            raise ApiError(404, "job_not_found", f"no job {job_id}", field="job_id")
        state = fold(event for event, _ in history)
        if state.status in TERMINAL:
            return job, False
        event = JobCancelled(
            reason=reason, attempt=state.attempt if state.status in _ON_DEVICE else None
        )
        decide(state, event)
        metadata = Metadata(org_id=job["org_id"], actor=actor, request_id=request_id)
        try:
            [appended] = await append(conn, job_id, state.version, [event], metadata)
        except ConcurrencyConflict:
            continue
        cancelled = job_from_history(job_id, [*history, (event, appended.recorded_at)])
        assert cancelled is not None
        return cancelled, True
    raise ApiError(
        409,
        "conflict",
        f"job {job_id} kept changing while it was being cancelled; try again",
        field="job_id",
    )
