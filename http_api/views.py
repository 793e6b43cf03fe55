"""The JSON documents the API answers with, built from projection rows or a job's events.

A job is normally read from the ``jobs`` projection. Right after a submit the projector
may not have applied it yet; then the job's own stream is folded into the same document,
so a client never sees 404 for a job it was just given.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from ledger.codec import converter, encode
from ledger.decisions import TERMINAL, JobStatus, fold
from ledger.events import (
    CaseResult,
    CaseStatus,
    Event,
    FailureKind,
    JobCancelled,
    JobFailed,
    JobPassed,
    JobStarted,
    JobSubmitted,
    JobTimedOut,
)
from ledger.store import RecordedEvent

__all__ = [
    "CURSOR_PATTERN",
    "JOB_STATUSES",
    "decode_cursor",
    "encode_cursor",
    "event_document",
    "job_from_history",
    "job_from_row",
    "jsonable",
    "run_document",
]

JOB_STATUSES = tuple(status.value for status in JobStatus)
Json = dict[str, Any]


def jsonable(value: Any) -> Any:
    """*value* with UUIDs and datetimes as strings and tuples as lists, ready for JSON."""
    match value:
        case UUID():
            return str(value)
        case dt.datetime():
            return value.isoformat()
        case Mapping():
            return {key: jsonable(item) for key, item in value.items()}
        case list() | tuple():
            return [jsonable(item) for item in value]
    return value


def job_from_row(row: Mapping[str, Any]) -> Json:
    job: Json = jsonable(row)
    job["flaky"] = bool(job["flaky"])
    # Filled in for jobs that wait for a device by http_api/reads.py.
    job["waiting"] = None
    return job


def job_from_history(job_id: UUID, history: Sequence[tuple[Event, dt.datetime]]) -> Json | None:
    """The job document folded from its events and their times; None if it has none."""
    if not history or not isinstance(history[0][0], JobSubmitted):
        return None
    submitted, submitted_at = history[0]
    assert isinstance(submitted, JobSubmitted)
    state = fold(event for event, _ in history)
    job: Json = {
        "job_id": job_id,
        "org_id": submitted.org_id,
        "app_version_id": submitted.app_version_id,
        "test_path": submitted.test_path,
        "target": submitted.target.value,
        "platform": submitted.platform,
        "device": submitted.device,
        "os_version": submitted.os_version,
        "priority": submitted.priority,
        "status": state.status.value if state.status else JobStatus.SUBMITTED.value,
        "run_id": submitted.run_id,
        "group_id": state.group_id,
        "device_id": state.device_id,
        "attempts": state.attempt,
        "flaky": False,
        "failure_kind": None,
        "last_error": None,
        "build": submitted.build,
        "repo": submitted.repo,
        "commit": submitted.commit,
        "tags": list(submitted.tags),
        "max_attempts": submitted.max_attempts,
        "timeout_s": submitted.timeout_s,
        "supersede_key": submitted.supersede_key,
        "rerun_of": submitted.rerun_of,
        "submitted_at": submitted_at,
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "tests": None,
        "waiting": None,
    }
    failed_test = False
    for event, at in history[1:]:
        match event:
            case JobStarted():
                job["started_at"] = at
            case JobPassed(duration_s=duration, tests=tests):
                job.update(duration_s=duration, tests=_cases(tests))
                failed_test = failed_test or any(c.status is CaseStatus.FLAKY for c in tests)
            case JobFailed(kind=kind, reason=reason, duration_s=duration, tests=tests):
                job.update(failure_kind=kind.value, last_error=reason, duration_s=duration)
                job["tests"] = _cases(tests)
                failed_test = failed_test or kind is FailureKind.TEST
            case JobCancelled(reason=reason) | JobTimedOut(reason=reason):
                job["last_error"] = reason
    if state.status in TERMINAL:
        job["finished_at"] = history[-1][1]
    # A test that failed and then passed on a retry is flaky.
    job["flaky"] = failed_test and state.status is JobStatus.PASSED
    result: Json = jsonable(job)
    return result


def _cases(tests: tuple[CaseResult, ...]) -> list[Json] | None:
    # As the projection's tests column holds them: None when none were reported.
    return converter.unstructure(tests) if tests else None


def run_document(run_id: UUID, jobs: Sequence[Json]) -> Json:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return {
        "run_id": str(run_id),
        "rerun_of": next((job["rerun_of"] for job in jobs if job.get("rerun_of")), None),
        "done": bool(jobs) and all(job["status"] in TERMINAL for job in jobs),
        "counts": counts,
        "jobs": list(jobs),
    }


def event_document(recorded: RecordedEvent) -> Json:
    type_name, data = encode(recorded.event)
    return {
        "position": recorded.position,
        "version": recorded.version,
        "type": type_name,
        "data": data,
        "metadata": converter.unstructure(recorded.metadata),
        "recorded_at": recorded.recorded_at.isoformat(),
    }


#: What a cursor looks like: the job's submit time in microseconds since 1970, a dot, and
#: its id in hex. Any string of this form is a place in the list, so the OpenAPI document
#: can say exactly which strings are cursors.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def encode_cursor(job: Json) -> str:
    """A cursor pointing just after *job* in newest-first order."""
    since_epoch = dt.datetime.fromisoformat(job["submitted_at"]) - _EPOCH
    return f"{since_epoch // _MICROSECOND}.{UUID(job['job_id']).hex}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    """Raises ValueError when *cursor* is not of the form encode_cursor makes."""
    if not _CURSOR.fullmatch(cursor):
        raise ValueError(f"not a cursor this server made: {cursor!r}")
    micros, job_id = cursor.split(".")
    return _EPOCH + int(micros) * _MICROSECOND, UUID(hex=job_id)
