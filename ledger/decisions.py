"""Which job transitions a job's history allows.

A job's state is the fold of its events (``JobState.evolve``); ``decide``
refuses an event the state does not allow, with a message that says why. The
API and the runner call ``decide`` before they append, and the projector uses
the same fold, so the rules live here once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Set
from uuid import UUID

import attrs

from ledger.errors import TransitionRefused
from ledger.events import (
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
    TimeoutKind,
)

__all__ = ["TERMINAL", "JobState", "JobStatus", "decide", "fold"]


class JobStatus(enum.StrEnum):
    #: Accepted, not yet in a group.
    SUBMITTED = "submitted"
    #: In a group, waiting for a device.
    GROUPED = "grouped"
    #: A device slot claimed it; it has not started yet.
    ASSIGNED = "assigned"
    RUNNING = "running"
    #: An attempt failed for a reason worth another try; waiting to be claimed again.
    RETRYING = "retrying"
    PASSED = "passed"
    #: The tests ran and one failed (after every retry it was allowed).
    FAILED = "failed"
    #: The infrastructure (device, build, executor, agent) failed, and no retry follows.
    ERROR = "error"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset(
    {
        JobStatus.PASSED,
        JobStatus.FAILED,
        JobStatus.ERROR,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
    }
)
_QUEUED = frozenset({JobStatus.SUBMITTED, JobStatus.GROUPED, JobStatus.RETRYING})
_ON_DEVICE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})


@attrs.frozen(kw_only=True)
class JobState:
    """What a job's history adds up to, as far as deciding its next transition goes."""

    #: The stream version this state was folded up to; 0 before the job exists.
    version: int = 0
    status: JobStatus | None = None
    #: Attempts assigned so far; the running attempt's number while one runs.
    attempt: int = 0
    max_attempts: int = 1
    group_id: UUID | None = None
    device_id: UUID | None = None
    #: The attempt whose failure may still be followed by a retry.
    retryable_attempt: int | None = None

    def evolve(self, event: Event) -> JobState:
        state = attrs.evolve(self, version=self.version + 1, retryable_attempt=None)
        match event:
            case JobSubmitted(max_attempts=max_attempts):
                return attrs.evolve(state, status=JobStatus.SUBMITTED, max_attempts=max_attempts)
            case JobGrouped(group_id=group_id):
                return attrs.evolve(state, status=JobStatus.GROUPED, group_id=group_id)
            case JobAssigned(attempt=attempt, device_id=device_id):
                return attrs.evolve(
                    state, status=JobStatus.ASSIGNED, attempt=attempt, device_id=device_id
                )
            case JobStarted():
                return attrs.evolve(state, status=JobStatus.RUNNING)
            case JobPassed():
                return attrs.evolve(state, status=JobStatus.PASSED)
            case JobFailed(attempt=attempt, kind=kind):
                status = JobStatus.ERROR if kind is FailureKind.INFRASTRUCTURE else JobStatus.FAILED
                return attrs.evolve(state, status=status, retryable_attempt=attempt)
            case JobLeaseExpired(attempt=attempt):
                # The attempt is void; a retry or a final error must follow.
                return attrs.evolve(state, status=JobStatus.ERROR, retryable_attempt=attempt)
            case JobRetryScheduled():
                return attrs.evolve(state, status=JobStatus.RETRYING, device_id=None)
            case JobCancelled():
                return attrs.evolve(state, status=JobStatus.CANCELLED)
            case JobTimedOut():
                return attrs.evolve(state, status=JobStatus.TIMED_OUT)
        raise TransitionRefused(f"{type(event).__name__} is not a job event")


def fold(events: Iterable[Event], state: JobState | None = None) -> JobState:
    state = state or JobState()
    for event in events:
        state = state.evolve(event)
    return state


def decide(state: JobState, event: Event) -> JobState:
    """Return the state after *event*, or raise TransitionRefused naming why it may not happen."""
    refusal = _refusal(state, event)
    if refusal is not None:
        raise TransitionRefused(f"cannot record {type(event).__name__}: {refusal}")
    return state.evolve(event)


def _refusal(state: JobState, event: Event) -> str | None:
    status = state.status
    if status is None and not isinstance(event, JobSubmitted):
        return "the job does not exist"
    match event:
        case JobSubmitted():
            return None if status is None else "the job was already submitted"
        case JobGrouped():
            return _require(status, {JobStatus.SUBMITTED})
        case JobAssigned(attempt=attempt):
            if attempt != state.attempt + 1:
                return f"the next attempt is {state.attempt + 1}, not {attempt}"
            return _require(status, {JobStatus.GROUPED, JobStatus.RETRYING})
        case JobStarted(attempt=attempt):
            return _same_attempt(state, attempt) or _require(status, {JobStatus.ASSIGNED})
        case JobPassed(attempt=attempt):
            return _same_attempt(state, attempt) or _require(status, {JobStatus.RUNNING})
        case JobFailed(attempt=attempt) | JobLeaseExpired(attempt=attempt):
            return _same_attempt(state, attempt) or _require(status, _ON_DEVICE)
        case JobRetryScheduled(attempt=attempt, handed_back=True):
            # The runner gives back an attempt it holds, before any verdict.
            return _same_attempt(state, attempt) or _require(status, _ON_DEVICE)
        case JobRetryScheduled(attempt=attempt):
            if state.retryable_attempt != attempt:
                return "only a failed or expired attempt can be retried, right after it ends"
            return None
        case JobCancelled():
            return _require(status, _QUEUED | _ON_DEVICE)
        case JobTimedOut(kind=TimeoutKind.QUEUE):
            return _require(status, _QUEUED)
        case JobTimedOut(kind=TimeoutKind.RUN, attempt=attempt):
            return _same_attempt(state, attempt) or _require(status, _ON_DEVICE)
    return f"{type(event).__name__} is not a job event"


def _require(status: JobStatus | None, allowed: Set[JobStatus]) -> str | None:
    if status in allowed:
        return None
    return f"the job is {status}"


def _same_attempt(state: JobState, attempt: int | None) -> str | None:
    if attempt != state.attempt:
        return f"attempt {attempt} is not the current attempt ({state.attempt})"
    return None
