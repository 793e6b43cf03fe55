"""Grouping a batch's ungrouped jobs: appending their JobGrouped in the batch's transaction.

The API groups the jobs it submits (http_api/submit.py); this groups the others: jobs
appended by another writer, or that the API's custom strategy failed on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from ledger.errors import ConcurrencyConflict
from ledger.events import JobSubmitted, Metadata
from ledger.sqlfile import load_queries
from ledger.store import Appended, StreamWrite, append_many
from projections.fold import Fold
from projections.grouping import Grouping
from projections.reading import Read

__all__ = ["ACTOR", "group_new_jobs"]

_log = logging.getLogger(__name__)
_QUERIES = load_queries(Path(__file__).with_name("batch_grouping.sql"))
#: Who the JobGrouped events say wrote them.
ACTOR = "projector"


async def group_new_jobs(
    conn: psycopg.AsyncConnection[Any], grouping: Grouping, fold: Fold, events: Sequence[Read]
) -> None:
    """Group the batch's new jobs that nothing has moved on yet, and fold that in too."""
    submitted = {
        e.stream_id: e
        for e in events
        if isinstance(e.event, JobSubmitted) and fold.jobs[e.stream_id].version == 1
    }
    if not submitted:
        return
    cursor = await conn.execute(_QUERIES["stream_versions"], {"stream_ids": list(submitted)})
    versions = dict(await cursor.fetchall())
    writes = []
    for job_id, recorded in submitted.items():
        if versions.get(job_id) != 1:
            continue  # cancelled or otherwise moved on before it was grouped
        write = _grouping_write(grouping, job_id, recorded)
        if write is not None:
            writes.append(write)
    for write, appended in await _append_what_still_fits(conn, writes):
        fold.apply(write.stream_id, appended.version, write.events[0], appended.recorded_at)


def _grouping_write(grouping: Grouping, job_id: UUID, recorded: Read) -> StreamWrite | None:
    assert isinstance(recorded.event, JobSubmitted) and recorded.metadata is not None
    grouped = grouping.try_group(recorded.event, job_id)
    if grouped is None:
        return None
    metadata = Metadata(
        org_id=recorded.metadata.org_id,
        actor=ACTOR,
        correlation_id=recorded.metadata.correlation_id,
        causation_id=str(recorded.position),
    )
    return StreamWrite(stream_id=job_id, expected_version=1, events=[grouped], metadata=metadata)


async def _append_what_still_fits(
    conn: psycopg.AsyncConnection[Any], writes: list[StreamWrite]
) -> list[tuple[StreamWrite, Appended]]:
    """Append all *writes* at once; if a stream moved on meanwhile, each alone, skipping it."""
    if not writes:
        return []
    try:
        async with conn.transaction():
            return list(zip(writes, await append_many(conn, writes), strict=True))
    except ConcurrencyConflict:
        pass
    done = []
    for write in writes:
        try:
            async with conn.transaction():
                (appended,) = await append_many(conn, [write])
        except ConcurrencyConflict:
            _log.info("job %s moved on before it was grouped; leaving it", write.stream_id)
            continue
        done.append((write, appended))
    return done
