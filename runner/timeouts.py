"""Queue timeouts: a job that never started within its ``queue_timeout_s`` ends timed out.

Any agent sweeps open_jobs for them; the append at the version the row shows makes sure
a job claimed, cancelled or timed out meanwhile is left alone.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.decisions import JobState, JobStatus, decide
from ledger.errors import ConcurrencyConflict
from ledger.events import JobTimedOut, Metadata, TimeoutKind
from ledger.store import append
from runner._sql import QUERIES

__all__ = ["time_out_queued_jobs"]


async def time_out_queued_jobs(conn: psycopg.AsyncConnection[Any], *, actor: str) -> int:
    """End every overdue queued job as timed out; return how many this call ended."""
    ended = 0
    cursor = await conn.execute(QUERIES["queue_overdue"])
    for job_id, version, status, attempts, max_attempts, org_id, queue_timeout_s in (
        await cursor.fetchall()
    ):
        state = JobState(
            version=version, status=JobStatus(status), attempt=attempts, max_attempts=max_attempts
        )
        event = JobTimedOut(
            kind=TimeoutKind.QUEUE,
            reason=f"did not start within its queue timeout of {queue_timeout_s:g} s",
        )
        decide(state, event)
        try:
            await append(conn, job_id, version, [event], Metadata(org_id=org_id, actor=actor))
        except ConcurrencyConflict:
            continue
        ended += 1
    return ended
