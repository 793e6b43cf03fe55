"""Submitting jobs: validate the body, then append each job's events, all or nothing.

A body is one job (``test_path``) or a suite (``tests``: many test paths sharing the
other fields), which gets a run id; a suite with ``profiles`` (a device matrix) gets one
job per test per profile, all in one run. Validation is the ledger's own schema
(``ledger.codec.structure``), so the API accepts exactly what the ledger can record. A
job that states no platform needs the one its build's suffix names.

A job is grouped as it is submitted, and only then: its JobGrouped commits with its
JobSubmitted, which makes it claimable (migrations/040_open_jobs.sql). The strategy is
the API's (``--grouping`` or $QGJOB_GROUPING).

A submit is answered only once it is on disk, but devices need not wait for that: its
transaction commits without waiting for the WAL flush (a disk write, the larger part of
a commit), which wakes the devices; then the submit waits for the flush. Should the
server crash in between, the submit is lost unanswered, and the client's retry (same
Idempotency-Key) submits it again; nothing durable can have come of it meanwhile, since
any commit that waits for its flush flushes the WAL before it, the submit's included.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import psycopg

from http_api import reads
from http_api.errors import ApiError
from http_api.views import Json, job_from_history
from ledger.capabilities import DeviceProfile, platform_of_build
from ledger.codec import structure
from ledger.errors import InvalidEvent
from ledger.events import Event, JobSubmitted, Metadata
from ledger.grouping import Grouping
from ledger.sqlfile import load_queries
from ledger.store import StreamWrite, append_arguments, execute_appending, flush

__all__ = [
    "MAX_IDEMPOTENCY_KEY",
    "MAX_PROFILES",
    "MAX_SUITE",
    "SubmitRequest",
    "Submitted",
    "parse",
    "submit",
]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_FIELDS = frozenset(field.name for field in attrs.fields(JobSubmitted)) | {
    "tests",
    "profiles",
    "force",
}
_PROFILE_FIELDS = ("platform", "device", "os_version")
MAX_SUITE = 1000
MAX_PROFILES = 20
MAX_IDEMPOTENCY_KEY = 200
_ABSENT = object()


@attrs.frozen(kw_only=True)
class SubmitRequest:
    """A validated submit body."""

    #: The jobs to create, in order: one, or a suite's.
    jobs: tuple[JobSubmitted, ...]
    #: Set for a suite: the run its jobs share.
    run_id: UUID | None
    #: Queue the job even when an identical one is still queued or running.
    force: bool
    #: SHA-256 of the body, to tell a retry from another request reusing its key.
    digest: bytes


@attrs.frozen(kw_only=True)
class Submitted:
    """What a submit answers with."""

    jobs: list[Json]
    run_id: UUID | None
    #: False when existing jobs were returned (a retried request, or a duplicate job).
    created: bool

    def document(self) -> Json:
        if self.run_id is None:
            return self.jobs[0]
        return {"run_id": str(self.run_id), "jobs": self.jobs}


def parse(body: dict[str, Any], org_id: str | None) -> SubmitRequest:
    """Validate a submit body for *org_id* (None: the body names the org).

    Raises ApiError or InvalidEvent naming the first offending field.
    """
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(400, "invalid_field", f"unknown field {unknown[0]!r}", field=unknown[0])
    data = dict(body)
    force = data.pop("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "invalid_field", "force must be true or false", field="force")
    if "run_id" in data:
        raise ApiError(
            400, "invalid_field", "run_id is assigned by the server; leave it out", field="run_id"
        )
    if org_id is not None:
        data.setdefault("org_id", org_id)
    # Absent, not null: "tests": null is a wrong value, refused below.
    tests = data.pop("tests", _ABSENT)
    profiles = _profiles(data.pop("profiles"), data) if "profiles" in data else None
    if tests is _ABSENT and profiles is None:
        return SubmitRequest(jobs=(_job(data),), run_id=None, force=force, digest=digest)
    if tests is _ABSENT:
        if "test_path" not in data:
            raise InvalidEvent("test_path is required", field="test_path")
        tests = [data.pop("test_path")]
    elif "test_path" in data:
        raise ApiError(
            400, "invalid_field", "give either test_path or tests, not both", field="tests"
        )
    if not isinstance(tests, list) or not tests or len(tests) > MAX_SUITE:
        raise ApiError(
            400,
            "invalid_field",
            f"tests must be a list of 1 to {MAX_SUITE} test paths",
            field="tests",
        )
    matrix = profiles or [{}]
    if len(tests) * len(matrix) > MAX_SUITE:
        raise ApiError(
            400,
            "invalid_field",
            f"tests times profiles makes {len(tests) * len(matrix)} jobs; a suite has at most "
            f"{MAX_SUITE}",
            field="profiles",
        )
    run_id = uuid.uuid4()
    jobs = [
        attrs.evolve(_suite_job({**data, **profile}, index, test_path), run_id=run_id)
        for profile in matrix
        for index, test_path in enumerate(tests)
    ]
    return SubmitRequest(jobs=tuple(jobs), run_id=run_id, force=force, digest=digest)


def _profiles(raw: object, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A device matrix's profiles, as the job fields each one sets."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_PROFILES:
        raise ApiError(
            400,
            "invalid_field",
            f"profiles must be a list of 1 to {MAX_PROFILES} device profiles",
            field="profiles",
        )
    stated = [name for name in _PROFILE_FIELDS if name in data]
    if stated:
        raise ApiError(
            400,
            "invalid_field",
            f"give {stated[0]} in each of the profiles, not beside them",
            field=stated[0],
        )
    profiles = []
    for index, item in enumerate(raw):
        try:
            profile = structure(item, DeviceProfile)
        except InvalidEvent as error:
            where = f"profiles[{index}]" + (f".{error.field}" if error.field else "")
            raise InvalidEvent(f"profiles[{index}]: {error.message}", field=where) from error
        fields = {name: getattr(profile, name) for name in _PROFILE_FIELDS}
        profiles.append({name: value for name, value in fields.items() if value is not None})
    return profiles


def _job(data: dict[str, Any]) -> JobSubmitted:
    """One job of a body; a job stating no platform needs the one its build names."""
    job = structure(data, JobSubmitted)
    if job.platform is None:
        job = attrs.evolve(job, platform=platform_of_build(job.build))
    return job


def _suite_job(data: dict[str, Any], index: int, test_path: object) -> JobSubmitted:
    """The suite's job of its *index*-th test, with errors in the test path named by place."""
    try:
        return _job({**data, "test_path": test_path})
    except InvalidEvent as error:
        if error.field != "test_path":
            raise
        where = f"tests[{index}]"
        raise InvalidEvent(
            f"{where}: {error.message.removeprefix('test_path ')}", field=where
        ) from error


async def submit(
    conn: psycopg.AsyncConnection[Any],
    request: SubmitRequest,
    *,
    grouping: Grouping,
    actor: str,
    idempotency_key: str | None,
    request_id: str | None,
) -> Submitted:
    """Append and announce the request's jobs, unless it is a retry or a duplicate, and
    return once they are on disk.

    The checks and the append are one statement (migrations/040_open_jobs.sql), and so
    one round trip and one transaction; then comes the wait for the flush. *conn* must
    be in autocommit mode.
    """
    first = request.jobs[0]
    org_id = first.org_id
    submission_id = uuid.uuid4()
    job_ids = [uuid.uuid4() for _ in request.jobs]
    metadata = Metadata(
        org_id=org_id, actor=actor, correlation_id=submission_id, request_id=request_id
    )
    writes = [
        StreamWrite(
            stream_id=job_id,
            expected_version=0,
            events=_submitted_and_grouped(grouping, job_id, job),
            metadata=metadata,
        )
        for job_id, job in zip(job_ids, request.jobs, strict=True)
    ]
    cursor = await execute_appending(
        conn,
        _QUERIES["submit"],
        {
            "check_duplicate": request.run_id is None and not request.force,
            "org_id": org_id,
            "app_version_id": first.app_version_id,
            "test_path": first.test_path,
            "target": first.target.value,
            "submission_id": submission_id,
            "idempotency_key": idempotency_key,
            "request_hash": request.digest,
            "run_id": request.run_id,
            "job_ids": job_ids,
            **append_arguments(writes),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    duplicate, claimed, recorded_at = row
    if not claimed:
        submitted = await _replay(conn, org_id, idempotency_key, request.digest)
    elif duplicate is not None:
        submitted = Submitted(
            jobs=await reads.jobs(conn, [duplicate], org_id), run_id=None, created=False
        )
    else:
        submitted = _created(writes, recorded_at, request.run_id)
    # Also for a retry or a duplicate: what it answers with may have been committed by
    # another request a moment ago, and not be on disk yet.
    await flush(conn)
    return submitted


def _created(
    writes: list[StreamWrite], recorded_at: list[dt.datetime], run_id: UUID | None
) -> Submitted:
    times = iter(recorded_at)
    documents = []
    for write in writes:
        history = [(event, next(times)) for event in write.events]
        document = job_from_history(write.stream_id, history)
        assert document is not None
        documents.append(document)
    return Submitted(jobs=documents, run_id=run_id, created=True)


def _submitted_and_grouped(grouping: Grouping, job_id: UUID, job: JobSubmitted) -> list[Event]:
    return [job, grouping.group_or_default(job, job_id)]


async def _replay(
    conn: psycopg.AsyncConnection[Any], org_id: str, key: str | None, digest: bytes
) -> Submitted:
    cursor = await conn.execute(
        _QUERIES["submission_by_key"], {"org_id": org_id, "idempotency_key": key}
    )
    row = await cursor.fetchone()
    assert row is not None, "the conflicting submission committed before our insert returned"
    request_hash, run_id, job_ids = row
    if bytes(request_hash) != digest:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request; "
            "send a new key for a new request",
            field="Idempotency-Key",
        )
    return Submitted(jobs=await reads.jobs(conn, job_ids, org_id), run_id=run_id, created=False)
