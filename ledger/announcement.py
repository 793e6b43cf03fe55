"""What a submit tells the device agents: the jobs it made claimable.

A notification on the JOBS channel (ledger/wakeup.py) may carry the jobs its
transaction grouped, each with the version its JobGrouped left and its submit. An
agent takes them as they are, instead of reading the ledger to learn what the
notification was about: a round trip less between a submit and its claim. A
notification without jobs (a cancel, jobs grouped by the projector, a suite too large
for a payload) means "look in the ledger", as does a reconnect.

When the submit gave its job to a slot's standing claim (runner/standing.py), the
database wraps the announcement with that slot: ``{"assigned": {"device_id",
"agent_id"}, "jobs": [...]}``; the job is then that slot's, not a candidate for others.
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

__all__ = ["Announced", "Assignment", "GroupedJob", "announced", "announcement"]

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


@attrs.frozen(kw_only=True)
class Assignment:
    """The slot a submit gave its job to."""

    device_id: UUID
    agent_id: str


@attrs.frozen(kw_only=True)
class Announced:
    """What a notification announces."""

    jobs: list[GroupedJob]
    #: Set when the jobs already belong to a slot.
    assigned: Assignment | None = None


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


def announced(payload: str) -> Announced:
    """What a payload announces (no jobs for an empty one).

    Raises InvalidEvent for a payload that is not an announcement: anyone who may
    NOTIFY can send one.
    """
    if not payload:
        return Announced(jobs=[])
    try:
        document = orjson.loads(payload)
        assigned = None
        if isinstance(document, dict):
            slot = document["assigned"]
            assigned = Assignment(device_id=UUID(slot["device_id"]), agent_id=str(slot["agent_id"]))
            document = document["jobs"]
        jobs = [
            GroupedJob(
                job_id=UUID(job["job_id"]),
                version=int(job["version"]),
                group_id=UUID(job["group_id"]),
                submitted=structure(job["submitted"], JobSubmitted),
            )
            for job in document
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidEvent(f"not an announcement of jobs: {error}") from error
    return Announced(jobs=jobs, assigned=assigned)
