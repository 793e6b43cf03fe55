"""Folding a batch of events into rows and counter changes, in memory.

The fold starts from the rows the batch touches, as loaded from the tables, and
applies each event to its stream's row in order. An event at or below the row's
version is already in the projection and is skipped, so applying a batch twice
changes nothing. Effects on other rows (a group's counts, a device's jobs, queue
depth) are kept as deltas, which add up to the same totals whatever the batch
boundaries were; that is what makes a rebuild match the live projection.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any
from uuid import UUID

from ledger.codec import converter
from ledger.decisions import JobStatus
from ledger.events import (
    DEVICE_EVENTS,
    JOB_EVENTS,
    AppInstalled,
    BuildUploaded,
    CaseResult,
    CaseStatus,
    DeviceHeartbeat,
    DeviceRegistered,
    DeviceRetired,
    Event,
    FailureKind,
    JobAssigned,
    JobCancelled,
    JobFailed,
    JobGrouped,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    JobTimedOut,
    Metadata,
)
from projections.deltas import BUCKET, GroupChange, NewGroup, QueueKey
from projections.rows import DeviceRow, JobRow

__all__ = ["Fold"]

_log = logging.getLogger(__name__)

_ON_DEVICE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})
# Plain strings: the rows hold what the table holds, and enum attribute lookups are slow.
_SUBMITTED, _GROUPED, _ASSIGNED, _RUNNING, _RETRYING = (
    JobStatus.SUBMITTED.value,
    JobStatus.GROUPED.value,
    JobStatus.ASSIGNED.value,
    JobStatus.RUNNING.value,
    JobStatus.RETRYING.value,
)
_PASSED, _FAILED, _ERROR, _CANCELLED, _TIMED_OUT = (
    JobStatus.PASSED.value,
    JobStatus.FAILED.value,
    JobStatus.ERROR.value,
    JobStatus.CANCELLED.value,
    JobStatus.TIMED_OUT.value,
)
_INFRASTRUCTURE = FailureKind.INFRASTRUCTURE.value


class Fold:
    """Applies events to loaded rows; read the results from its attributes afterwards."""

    def __init__(
        self, jobs: dict[UUID, JobRow], devices: dict[UUID, DeviceRow], *, events: int = 0
    ) -> None:
        #: How many events of the ledger the batch covers (those already applied included).
        self.events = events
        #: Every loaded or created job row, by id.
        self.jobs = jobs
        self.devices = devices
        #: Jobs this batch created; the other changed ones exist in the table already.
        self.new_jobs: set[UUID] = set()
        self.changed_jobs: set[UUID] = set()
        self.changed_devices: set[UUID] = set()
        self.groups: dict[UUID, GroupChange] = {}
        self.queue: Counter[QueueKey] = Counter()

    def apply(
        self,
        stream_id: UUID,
        version: int,
        event: Event,
        at: dt.datetime,
        metadata: Metadata | None = None,
    ) -> bool:
        """Apply one event; False when it was already applied or does not fit its stream.

        *metadata* is needed for AppInstalled only, whose organisation owns the app.
        """
        if isinstance(event, JOB_EVENTS):
            return self._job(stream_id, version, event, at)
        if isinstance(event, DEVICE_EVENTS):
            return self._device(stream_id, version, event, at, metadata)
        _log.warning("skipping %s on stream %s: not a job or device event", event, stream_id)
        return False

    # ---- jobs -----------------------------------------------------------------------------

    def _job(self, job_id: UUID, version: int, event: Event, at: dt.datetime) -> bool:
        row = self.jobs.get(job_id)
        if row is None:
            if not isinstance(event, JobSubmitted):
                _log.warning("skipping %s for job %s, which was never submitted", event, job_id)
                return False
            row = self.jobs[job_id] = _submitted(job_id, event, at)
            self.new_jobs.add(job_id)
            self.queue[(row.org_id, row.target, row.status)] += 1
        elif version <= row.version:
            return False
        else:
            before = (row.status, row.group_id, row.device_id)
            self._evolve(row, event, at)
            self._moved(row, *before, at)
        row.version = version
        row.updated_at = at
        self.changed_jobs.add(job_id)
        return True

    def _evolve(self, row: JobRow, event: Event, at: dt.datetime) -> None:
        match event:
            case JobGrouped(group_id=group_id, strategy=strategy, group_key=key):
                row.status, row.group_id, row.grouped_at = _GROUPED, group_id, at
                change = self._group(group_id, at)
                new = NewGroup(
                    org_id=row.org_id,
                    strategy=strategy,
                    group_key=key,
                    app_version_id=row.app_version_id,
                    target=row.target,
                    created_at=at,
                )
                change.new = new if change.new is None else change.new.merge(new)
            case JobAssigned(attempt=attempt, device_id=device_id, agent_id=agent_id):
                row.status, row.attempts = _ASSIGNED, attempt
                row.device_id, row.agent_id = device_id, agent_id
                row.assigned_at, row.not_before = at, None
                row.started_at = row.finished_at = row.duration_s = None
                if row.group_id is not None:
                    self._group(row.group_id, at).attempts += 1
                device = self._device_seen(device_id, at)
                if device is not None:
                    device.attempts += 1
                    device.current_group = row.group_id
            case JobStarted():
                row.status, row.started_at = _RUNNING, at
                self._device_seen(row.device_id, at)
            case JobPassed(duration_s=duration, output=output, tests=tests):
                self._finished(row, _PASSED, at, duration)
                row.output, row.tests = output, _cases(tests)
                row.flaky = row.failure_kind is not None or any(
                    case.status is CaseStatus.FLAKY for case in tests
                )
            case JobFailed(kind=kind, reason=reason, duration_s=duration, output=output, tests=t):
                status = _ERROR if kind is FailureKind.INFRASTRUCTURE else _FAILED
                self._finished(row, status, at, duration)
                row.failure_kind, row.last_error, row.output = kind.value, reason, output
                row.tests = _cases(t)
            case JobLeaseExpired(agent_id=agent_id):
                if (device := self._device_seen(row.device_id, at)) is not None:
                    device.lease_expiries += 1
                row.status, row.finished_at = _ERROR, at
                row.failure_kind = _INFRASTRUCTURE
                row.last_error = f"lease expired: agent {agent_id} stopped renewing it"
            case JobRetryScheduled(not_before=not_before):
                row.status, row.not_before = _RETRYING, not_before
                row.device_id = row.agent_id = None
                row.finished_at = row.duration_s = None
            case JobCancelled(reason=reason):
                row.status, row.finished_at, row.last_error = _CANCELLED, at, reason
            case JobTimedOut(reason=reason):
                row.status, row.finished_at, row.last_error = _TIMED_OUT, at, reason

    def _finished(self, row: JobRow, status: str, at: dt.datetime, duration: float | None) -> None:
        row.status, row.finished_at, row.duration_s = status, at, duration
        device = self._device_seen(row.device_id, at)
        if device is not None and duration is not None:
            device.busy_s += duration

    def _moved(
        self,
        row: JobRow,
        status: str,
        group_id: UUID | None,
        device_id: UUID | None,
        at: dt.datetime,
    ) -> None:
        """Move the job's counts from where it was to where it is now."""
        if row.status != status:
            self.queue[(row.org_id, row.target, status)] -= 1
            self.queue[(row.org_id, row.target, row.status)] += 1
        old_bucket, new_bucket = BUCKET[status], BUCKET[row.status]
        if group_id is not None and group_id == row.group_id:
            if old_bucket != new_bucket:
                counts = self._group(group_id, at).counts
                if old_bucket is not None:
                    counts[old_bucket] -= 1
                if new_bucket is not None:
                    counts[new_bucket] += 1
        else:
            if group_id is not None and old_bucket is not None:
                self._group(group_id, at).counts[old_bucket] -= 1
            if row.group_id is not None and new_bucket is not None:
                self._group(row.group_id, at).counts[new_bucket] += 1
        was_on = device_id if status in _ON_DEVICE else None
        now_on = row.device_id if row.status in _ON_DEVICE else None
        if was_on != now_on:
            self._device_jobs(was_on, -1)
            self._device_jobs(now_on, +1)

    def _group(self, group_id: UUID, at: dt.datetime) -> GroupChange:
        change = self.groups.get(group_id)
        if change is None:
            change = self.groups[group_id] = GroupChange(updated_at=at)
        elif at > change.updated_at:
            change.updated_at = at
        return change

    # ---- devices --------------------------------------------------------------------------

    def _device(
        self,
        device_id: UUID,
        version: int,
        event: Event,
        at: dt.datetime,
        metadata: Metadata | None,
    ) -> bool:
        row = self.devices.get(device_id)
        if row is None:
            if not isinstance(event, DeviceRegistered):
                _log.warning("skipping %s for device %s, never registered", event, device_id)
                return False
            row = self.devices[device_id] = DeviceRow(
                device_id=device_id,
                version=version,
                name=event.name,
                target=event.target.value,
                agent_id=event.agent_id,
                capabilities=dict(event.capabilities),
                state="idle",
                current_group=None,
                installed_apps=[],
                installs=0,
                registered_at=at,
                last_seen_at=at,
            )
        elif version <= row.version:
            return False
        match event:
            case DeviceRegistered(name=name, target=target, agent_id=agent_id, capabilities=caps):
                row.name, row.target, row.agent_id = name, target.value, agent_id
                row.capabilities, row.retired_at = dict(caps), None
            case AppInstalled(app_version_id=app_version_id, group_id=group_id):
                row.installs += 1
                if app_version_id not in row.installed_apps:
                    row.installed_apps.append(app_version_id)
                if metadata is not None:
                    own = row.installed_by_org.setdefault(metadata.org_id, [])
                    if app_version_id not in own:
                        own.append(app_version_id)
                if group_id is not None:
                    self._group(group_id, at).installs += 1
            case DeviceRetired():
                row.retired_at = at
            case DeviceHeartbeat() | BuildUploaded():
                pass
        row.version, row.last_seen_at = version, at
        _settle(row)
        self.changed_devices.add(device_id)
        return True

    def _device_seen(self, device_id: UUID | None, at: dt.datetime) -> DeviceRow | None:
        row = self.devices.get(device_id) if device_id is not None else None
        if row is not None:
            row.last_seen_at = max(row.last_seen_at, at)
            self.changed_devices.add(row.device_id)
        return row

    def _device_jobs(self, device_id: UUID | None, delta: int) -> None:
        row = self.devices.get(device_id) if device_id is not None else None
        if row is not None:
            row.active_jobs += delta
            _settle(row)
            self.changed_devices.add(row.device_id)


def _settle(device: DeviceRow) -> None:
    if device.active_jobs <= 0:
        device.current_group = None
    if device.retired_at is not None:
        device.state = "retired"
    else:
        device.state = "busy" if device.active_jobs > 0 else "idle"


def _cases(tests: tuple[CaseResult, ...]) -> list[dict[str, Any]] | None:
    """The ``tests`` column: None when the executor reported no test cases."""
    return converter.unstructure(tests) if tests else None


def _submitted(job_id: UUID, job: JobSubmitted, at: dt.datetime) -> JobRow:
    return JobRow(
        job_id=job_id,
        version=1,
        org_id=job.org_id,
        app_version_id=job.app_version_id,
        test_path=job.test_path,
        target=job.target.value,
        platform=job.platform.value if job.platform else None,
        device=job.device,
        os_version=job.os_version,
        priority=job.priority,
        build=job.build,
        repo=job.repo,
        commit=job.commit,
        tags=list(job.tags),
        run_id=job.run_id,
        max_attempts=job.max_attempts,
        timeout_s=job.timeout_s,
        queue_timeout_s=job.queue_timeout_s,
        supersede_key=job.supersede_key,
        rerun_of=job.rerun_of,
        status=_SUBMITTED,
        submitted_at=at,
        updated_at=at,
    )
