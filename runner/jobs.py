"""A job attempt a slot holds, and the events that record how it ended.

The runner keeps each held job's state as it will be once everything handed to the
writer is appended, so it can ``decide`` each transition without reading the stream.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from uuid import UUID

import attrs

from ledger.decisions import JobState
from ledger.events import (
    Event,
    FailureKind,
    JobFailed,
    JobPassed,
    JobRetryScheduled,
    JobTimedOut,
    TimeoutKind,
)
from runner.config import RetryPolicy
from runner.executors import Outcome

__all__ = ["HeldJob", "backoff_s", "hand_back", "outcome_events", "runner_actor"]


def runner_actor(agent_id: str) -> str:
    """Who the events an agent appends say wrote them."""
    return f"runner:{agent_id}"


@attrs.define(kw_only=True, eq=False)
class HeldJob:
    """One job attempt a slot claimed; mutable, owned by that slot."""

    job_id: UUID
    org_id: str
    test_path: str
    build: str | None
    #: Run timeout in seconds (the job's own, or the runner's default).
    timeout_s: float
    #: Attempts a test failure may use.
    max_attempts: int
    #: Attempts handed back before this one: they do not count against the limits.
    handed_back: int
    #: The state once every event handed to the writer is appended.
    state: JobState
    #: The stream version the next append expects.
    version: int
    started: bool = False
    finished: bool = False
    #: Another writer moved its stream on (a cancel, a rescue): nothing more is appended.
    lost: bool = False

    @property
    def attempt(self) -> int:
        return self.state.attempt

    @property
    def counted_attempts(self) -> int:
        """The attempts used so far, this one included, not counting those handed back."""
        return self.state.attempt - self.handed_back

    @property
    def settled(self) -> bool:
        """Nothing more will be appended for it by this slot."""
        return self.finished or self.lost


def backoff_s(counted_attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with ±50 % jitter after the *counted_attempts*-th attempt."""
    delay = min(policy.backoff_cap_s, policy.backoff_s * 2.0 ** (counted_attempts - 1))
    return delay * rng.uniform(0.5, 1.5)


def outcome_events(
    job: HeldJob,
    outcome: Outcome,
    *,
    policy: RetryPolicy,
    now: dt.datetime,
    rng: random.Random,
) -> list[Event]:
    """The events recording *outcome*, with a retry when attempts remain.

    A test failure is retried only while the job's own
    ``max_attempts`` allows; an infrastructure error while
    ``max(max_attempts, policy.infra_attempts)`` does.
    """
    attempt, counted_attempts = job.attempt, job.counted_attempts
    match outcome.status:
        case "passed":
            passed = JobPassed(
                attempt=attempt,
                duration_s=outcome.duration_s,
                output=outcome.output,
                tests=outcome.tests,
            )
            return [passed]
        case "timed_out":
            return [JobTimedOut(kind=TimeoutKind.RUN, reason=outcome.message, attempt=attempt)]
        case "failed":
            kind, limit, delay = FailureKind.TEST, job.max_attempts, 0.0
        case _:
            kind = FailureKind.INFRASTRUCTURE
            limit = max(job.max_attempts, policy.infra_attempts)
            delay = backoff_s(counted_attempts, policy, rng)
    events: list[Event] = [
        JobFailed(
            attempt=attempt,
            kind=kind,
            reason=outcome.message,
            duration_s=outcome.duration_s,
            output=outcome.output,
            tests=outcome.tests,
        )
    ]
    if counted_attempts < limit:
        events.append(
            JobRetryScheduled(
                attempt=attempt,
                not_before=now + dt.timedelta(seconds=delay),
                reason=f"attempt {attempt} failed ({kind}); {counted_attempts} of {limit} used",
            )
        )
    return events


def hand_back(job: HeldJob, reason: str, now: dt.datetime) -> Sequence[Event]:
    """The event giving a held attempt back to the queue, uncounted, before any verdict."""
    return [
        JobRetryScheduled(
            attempt=job.attempt, not_before=now, reason=f"handed back: {reason}", handed_back=True
        )
    ]
