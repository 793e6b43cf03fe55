"""What a fold keeps for rows other than the event's own: group changes and queue-depth keys."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import attrs

from ledger.decisions import JobStatus

__all__ = ["BUCKET", "GROUP_COUNTERS", "GroupChange", "NewGroup", "QueueKey"]

#: The per-status columns of ``groups``; a job counts in one of them once grouped.
GROUP_COUNTERS = (
    "queued",
    "assigned",
    "running",
    "passed",
    "failed",
    "errored",
    "cancelled",
    "timed_out",
)
#: The column of ``groups`` a job in each status counts in; None before it is grouped.
BUCKET: dict[str, str | None] = {
    JobStatus.SUBMITTED: None,
    JobStatus.GROUPED: "queued",
    JobStatus.RETRYING: "queued",
    JobStatus.ASSIGNED: "assigned",
    JobStatus.RUNNING: "running",
    JobStatus.PASSED: "passed",
    JobStatus.FAILED: "failed",
    JobStatus.ERROR: "errored",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.TIMED_OUT: "timed_out",
}

#: (org_id, target, status): the key of a ``queue_depth`` row.
QueueKey = tuple[str, str, str]


@attrs.frozen(kw_only=True)
class NewGroup:
    """A group's row as its jobs grouped in one batch describe it.

    Merging descriptions gives the same result in any order, so the row does not
    depend on which applier grouped which job first.
    """

    org_id: str
    strategy: str
    group_key: str
    #: The app version its jobs share; None when they have several.
    app_version_id: str | None
    target: str
    #: When its first job was grouped.
    created_at: dt.datetime

    def merge(self, other: NewGroup) -> NewGroup:
        return attrs.evolve(
            self,
            app_version_id=(
                self.app_version_id if self.app_version_id == other.app_version_id else None
            ),
            created_at=min(self.created_at, other.created_at),
        )


@attrs.define(kw_only=True)
class GroupChange:
    """What a batch adds to one group's row."""

    #: Set when the batch grouped a job into it: the row to create if it is new.
    new: NewGroup | None = None
    counts: Counter[str] = attrs.Factory(Counter)
    installs: int = 0
    attempts: int = 0
    updated_at: dt.datetime
