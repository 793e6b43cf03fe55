"""What a submit tells the device agents: the jobs it made claimable.

A notification on the JOBS channel (ledger/wakeup.py) may carry the jobs its
transaction grouped, each with the version its JobGrouped left and its submit. An
agent takes them as they are, instead of reading the ledger to learn what the
notification was about: a round trip less between a submit and its claim. A
notification without jobs (a cancel, jobs grouped by the projector, a suite too large
for a payload) means "look in the ledger", as does a reconnect.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import attrs
import orjson

from ledger.codec import encode, structure
from ledger.errors import InvalidEvent
from ledger.events import JobGrouped, JobSubmitted
from ledger.store import StreamWrite

__all__ = ["GroupedJob", "announced_jobs", "announcement"]

#: PostgreSQL refuses a notification payload of 8000 bytes or more.
_MAX_PAYLOAD = 7999


@attrs.frozen(kw_only=True)
class GroupedJob:
    """A job ready to claim, as its JobGrouped left it."""

    job_id: UUID
    #: The stream's version after its JobGrouped: what a claim's append expects.
    version: int
    group_id: UUID
    submitted: JobSubmitted


def announcement(writes: Sequence[StreamWrite]) -> str:
    """The payload announcing the jobs that *writes* (new job streams) submit and group;
    empty when there are none, or too many to fit."""
    jobs = []
    for write in writes:
        submitted, grouped = write.events[0], write.events[-1]
        if isinstance(submitted, JobSubmitted) and isinstance(grouped, JobGrouped):
            jobs.append(
                {
                    "job_id": str(write.stream_id),
                    "version": write.expected_version + len(write.events),
                    "group_id": str(grouped.group_id),
                    "submitted": encode(submitted)[1],
                }
            )
    payload = orjson.dumps(jobs) if jobs else b""
    return payload.decode() if len(payload) <= _MAX_PAYLOAD else ""


def announced_jobs(payload: str) -> list[GroupedJob]:
    """The jobs a payload announces (none for an empty one).

    Raises InvalidEvent for a payload that is not an announcement: anyone who may
    NOTIFY can send one.
    """
    if not payload:
        return []
    try:
        return [
            GroupedJob(
                job_id=UUID(job["job_id"]),
                version=int(job["version"]),
                group_id=UUID(job["group_id"]),
                submitted=structure(job["submitted"], JobSubmitted),
            )
            for job in orjson.loads(payload)
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidEvent(f"not an announcement of jobs: {error}") from error
