"""The rows the projector folds events into: one per job and one per device.

These are working copies: a batch loads the rows its events touch, changes them in
place once per event (which is why they are mutable), and writes them back in one
statement per table. Field names are column names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import attrs

__all__ = ["DEVICE_COLUMNS", "JOB_COLUMNS", "DeviceRow", "JobRow"]


@attrs.define(kw_only=True)
class JobRow:
    """A row of ``jobs``."""

    job_id: UUID
    #: The job stream's version this row reflects.
    version: int
    org_id: str
    app_version_id: str
    test_path: str
    target: str
    #: What the job needs of the device (ledger/capabilities.py).
    platform: str | None
    device: str | None
    os_version: str | None
    priority: int
    build: str | None
    repo: str | None
    commit: str | None
    tags: list[str]
    run_id: UUID | None
    max_attempts: int
    timeout_s: float | None
    queue_timeout_s: float | None
    supersede_key: str | None
    rerun_of: UUID | None
    #: A ledger.decisions.JobStatus value.
    status: str
    group_id: UUID | None = None
    #: The device of the current attempt, or of the last one when the job ended on a device.
    device_id: UUID | None = None
    agent_id: str | None = None
    #: The number of the latest attempt assigned.
    attempts: int = 0
    #: Passed on an attempt after an earlier attempt failed.
    flaky: bool = False
    #: Of the last failure; kept after a retry passes, as the reason it was flaky.
    failure_kind: str | None = None
    #: Why the job last failed, timed out or was cancelled.
    last_error: str | None = None
    #: The end of the last finished attempt's output.
    output: str | None = None
    #: The test cases of the last finished attempt (CaseResult as JSON), when reported.
    tests: list[dict[str, Any]] | None = None
    #: A retrying job is not claimed before this.
    not_before: dt.datetime | None = None
    submitted_at: dt.datetime
    grouped_at: dt.datetime | None = None
    #: Of the latest attempt.
    assigned_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_s: float | None = None
    #: When the last event of the job was recorded.
    updated_at: dt.datetime


@attrs.define(kw_only=True)
class DeviceRow:
    """A row of ``devices``."""

    device_id: UUID
    #: The device stream's version this row reflects.
    version: int
    name: str
    target: str
    agent_id: str
    capabilities: dict[str, str]
    #: ``idle``, ``busy`` (jobs assigned or running on it) or ``retired``.
    state: str
    #: The group of the job it took last, while it has jobs.
    current_group: UUID | None
    #: App versions installed on it, in order of first install.
    installed_apps: list[str]
    #: The same by organisation, which alone may see its own: an app version id names
    #: a build only within its organisation.
    installed_by_org: dict[str, list[str]] = attrs.field(factory=dict)
    installs: int
    registered_at: dt.datetime
    #: When the device, or a job on it, last recorded an event.
    last_seen_at: dt.datetime
    #: Jobs assigned to or running on it now.
    active_jobs: int = 0
    #: Job attempts it was assigned, ever.
    attempts: int = 0
    #: Seconds of test runs it reported.
    busy_s: float = 0.0
    #: Attempts on it that ended because its agent's lease lapsed.
    lease_expiries: int = 0
    retired_at: dt.datetime | None = None


JOB_COLUMNS: tuple[str, ...] = tuple(a.name for a in attrs.fields(JobRow))
DEVICE_COLUMNS: tuple[str, ...] = tuple(a.name for a in attrs.fields(DeviceRow))
