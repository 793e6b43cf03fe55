"""Many agents racing over one queue: each job ends once, one attempt at a time, within limits."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from uuid import UUID

import psycopg
import pytest

from ledger.decisions import JobStatus, decide, fold
from ledger.errors import ConcurrencyConflict
from ledger.events import (
    JobAssigned,
    JobCancelled,
    JobFailed,
    JobLeaseExpired,
    JobPassed,
    JobRetryScheduled,
    JobSubmitted,
    JobTimedOut,
    Target,
)
from ledger.store import RecordedEvent, append, read_stream
from tests.support.factories import metadata
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ORG_LIMITS = {"acme": 3, "globex": 5}
ORGS = ("acme", "globex", "initech")
TARGETS = (Target.EMULATOR, Target.EMULATOR, Target.DEVICE, Target.BROWSERSTACK)


def workload(n: int, rng: random.Random) -> list[JobSubmitted]:
    return [
        JobSubmitted(
            org_id=ORGS[i % 3],
            app_version_id=f"app-{rng.randrange(20):02d}",
            test_path=f"tests/{'fail-' if rng.random() < 0.03 else ''}case-{i}.spec.ts",
            target=TARGETS[i % 4],
            priority=rng.randint(1, 10),
            max_attempts=rng.choice((1, 2)),
        )
        for i in range(n)
    ]


def _attempt_ends(event: object) -> bool:
    if isinstance(event, JobRetryScheduled):
        return event.handed_back
    return isinstance(event, JobPassed | JobFailed | JobLeaseExpired | JobTimedOut | JobCancelled)


def most_slots_per_org(streams: dict[UUID, list[RecordedEvent]]) -> dict[str, int]:
    """From the ledger alone: the most slots each org held at one moment.

    An org holds a slot from a JobAssigned of one of its jobs there until that attempt
    ends; at equal timestamps, ends count first.
    """
    points = []
    for stream in streams.values():
        submitted = stream[0].event
        assert isinstance(submitted, JobSubmitted)
        device: UUID | None = None
        for recorded in stream:
            event = recorded.event
            if isinstance(event, JobAssigned):
                device = event.device_id
                points.append((recorded.recorded_at, 1, submitted.org_id, device, +1))
            elif device is not None and _attempt_ends(event):
                points.append((recorded.recorded_at, 0, submitted.org_id, device, -1))
                device = None
    holding: Counter[tuple[str, UUID]] = Counter()
    slots: Counter[str] = Counter()
    most: dict[str, int] = defaultdict(int)
    for _, _, org_id, device_id, delta in sorted(points, key=lambda p: p[:2]):
        before = holding[(org_id, device_id)]
        holding[(org_id, device_id)] += delta
        after = holding[(org_id, device_id)]
        slots[org_id] += (after > 0) - (before > 0)
        most[org_id] = max(most[org_id], slots[org_id])
    return dict(most)


async def cancel_some(url: str, ids: Sequence[UUID], rng: random.Random) -> int:
    """Cancel jobs at random moments, the way the API does: decide, append, retry on conflict."""
    cancelled = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for job_id in ids:
            await asyncio.sleep(rng.uniform(0, 0.05))
            for _ in range(10):
                history = await read_stream(conn, job_id)
                state = fold(r.event for r in history)
                if state.status in (JobStatus.PASSED, JobStatus.FAILED, JobStatus.TIMED_OUT):
                    break
                on_device = state.status in (JobStatus.ASSIGNED, JobStatus.RUNNING)
                event = JobCancelled(attempt=state.attempt if on_device else None)
                decide(state, event)
                try:
                    await append(conn, job_id, state.version, [event], metadata())
                except ConcurrencyConflict:
                    continue
                cancelled += 1
                break
    return cancelled


async def test_four_agents_with_four_slots_each_end_every_job_exactly_once(db_url: str) -> None:
    """2,000 jobs, 16 slots on 4 agents, cancels and retries mixed in: each job ends once,
    no attempt overlaps another, and no org ever holds more slots than its limit."""
    rng = random.Random(5)
    jobs = workload(2_000, rng)
    configs = [
        agent_config(
            f"agent-{n}",
            "emulator:2,device:1,browserstack:1",
            org_limits=ORG_LIMITS,
            simulated={"install_s": 0.004, "test_s": 0.001, "flake_rate": 0.05, "seed": n},
        )
        for n in range(4)
    ]
    async with pipeline(db_url, *configs):
        ids = await submit(db_url, jobs)
        cancelled = await cancel_some(db_url, rng.sample(ids, 40), rng)
        await wait_all_ended(db_url, ids, timeout=50)

    streams = await histories(db_url, ids)
    states = check_histories(streams)
    statuses = Counter(state.status for state in states.values())
    assert statuses[JobStatus.CANCELLED] == cancelled
    assert statuses[JobStatus.PASSED] > 1_800
    assert set(statuses) <= {JobStatus.PASSED, JobStatus.FAILED, JobStatus.CANCELLED}
    most = most_slots_per_org(streams)
    assert most["acme"] <= ORG_LIMITS["acme"]
    assert most["globex"] <= ORG_LIMITS["globex"]
    # The limits did bind: the unlimited org spread wider than the limited ones.
    assert most["initech"] > ORG_LIMITS["acme"]
    devices = {
        r.event.device_id for s in streams.values() for r in s if isinstance(r.event, JobAssigned)
    }
    assert len(devices) == 16
