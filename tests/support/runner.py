"""Running the real pipeline in a test: a projector and agents in one event loop.

Everything is real (PostgreSQL, projector, agents, simulated executor); only the
processes are folded into the test's event loop, so a test can start several agents
and still stop them cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import attrs
import psycopg

from http_api.submit import parse
from http_api.submit import submit as api_submit
from ledger.codec import encode
from ledger.decisions import TERMINAL, JobState, decide
from ledger.events import JobRetryScheduled, JobSubmitted, Metadata
from ledger.grouping import resolve
from ledger.store import RecordedEvent, StreamWrite, append_many
from projections.projector import Projector
from runner import AgentConfig, ClaimPolicy, run_agent
from runner.executors import SlotSpec
from tests.support.waiting import async_wait_until

__all__ = [
    "PASSED_AT_ONCE",
    "agent_config",
    "check_histories",
    "histories",
    "pipeline",
    "submit",
    "submit_as_api",
    "wait_all_ended",
]

#: The history of a job that one slot claimed, ran and passed, and nothing else touched.
PASSED_AT_ONCE = ["JobSubmitted", "JobGrouped", "JobAssigned", "JobStarted", "JobPassed"]

#: Fast enough for tests: short leases, quick polls, no real waiting on backoff.
FAST = {
    "lease_ttl_s": 2.0,
    "maintenance_interval_s": 0.2,
    "poll_interval_s": 0.2,
    "cancel_poll_s": 0.1,
    "retry": {"backoff_s": 0.0},
}


def agent_config(name: str, slots: str | Sequence[SlotSpec], **overrides: Any) -> AgentConfig:
    """An agent config for tests: fast timings; the simulated executor takes no time
    unless *simulated* says otherwise (its options are merged over that)."""
    from runner.config import build_config, slots_from_spec

    specs = slots_from_spec(slots) if isinstance(slots, str) else tuple(slots)
    data: dict[str, Any] = {
        **FAST,
        "name": name,
        "slots": [
            {"name": s.name, "target": s.target, "capabilities": dict(s.capabilities)}
            for s in specs
        ],
        "simulated": {"install_s": 0.0, "test_s": 0.0},
    }
    for key, value in overrides.items():
        if isinstance(value, ClaimPolicy):
            value = attrs.asdict(value)
        elif key == "simulated":
            value = {**data["simulated"], **value}
        data[key] = value
    return build_config(data)


async def submit(
    url: str, jobs: Sequence[JobSubmitted], *, grouping: str | None = None
) -> list[UUID]:
    """Append the jobs submitted and grouped, as the API does (one statement); return
    their ids. The append makes them claimable and wakes the agents of their targets."""
    strategy = resolve(grouping)
    ids = [uuid.uuid4() for _ in jobs]
    writes = [
        StreamWrite(
            stream_id=job_id,
            expected_version=0,
            events=[job, strategy.group(job)],
            metadata=Metadata(org_id=job.org_id, actor="test"),
        )
        for job_id, job in zip(ids, jobs, strict=True)
    ]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await append_many(conn, writes)
    return ids


async def submit_as_api(conn: psycopg.AsyncConnection[Any], job: JobSubmitted) -> UUID:
    """Submit one job through the API's statement. *conn* in autocommit mode."""
    body = {key: value for key, value in encode(job)[1].items() if value is not None}
    submitted = await api_submit(
        conn,
        parse(body, None),
        grouping=resolve(),
        actor="api",
        idempotency_key=None,
        request_id=None,
    )
    return UUID(submitted.jobs[0]["job_id"])


@attrs.define
class Pipeline:
    url: str
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def add_agent(self, config: AgentConfig) -> asyncio.Task[None]:
        task = asyncio.create_task(run_agent(self.url, config, self.stop))
        self.tasks.append(task)
        return task


@contextlib.asynccontextmanager
async def pipeline(url: str, *configs: AgentConfig) -> AsyncIterator[Pipeline]:
    """A projector and one agent per config, stopped (drained) on the way out."""
    stop = asyncio.Event()
    running = Pipeline(url=url, stop=stop, tasks=[])
    projector = Projector(url, poll_interval=0.2)
    running.tasks.append(asyncio.create_task(projector.run(stop)))
    for config in configs:
        running.add_agent(config)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*running.tasks), 30)


async def histories(url: str, ids: Sequence[UUID] | None = None) -> dict[UUID, list[RecordedEvent]]:
    """Every job stream's events, in version order."""
    from ledger.store import read_stream

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if ids is None:
            cursor = await conn.execute(
                "select distinct stream_id from events where type = 'JobSubmitted'"
            )
            ids = [row[0] for row in await cursor.fetchall()]
        return {job_id: await read_stream(conn, job_id) for job_id in ids}


async def wait_all_ended(url: str, ids: Sequence[UUID], *, timeout: float = 30.0) -> None:
    """Wait until the ledger shows every job in a terminal state."""
    query = """
        select count(*) from (
            select stream_id, (array_agg(type order by version desc))[1] as last
            from events where stream_id = any(%(ids)s) group by stream_id
        ) s
        where last in ('JobPassed', 'JobFailed', 'JobCancelled', 'JobTimedOut',
                       'JobLeaseExpired')
    """

    async def ended() -> bool:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            row = await (await conn.execute(query, {"ids": list(ids)})).fetchone()
        return row is not None and row[0] == len(ids)

    await async_wait_until(ended, timeout=timeout, what=f"{len(ids)} jobs to end")


def check_histories(streams: dict[UUID, list[RecordedEvent]]) -> dict[UUID, JobState]:
    """Replay every job through ledger.decisions and return the final states.

    Each history must be valid (so no attempt starts before the previous one ended) and
    end exactly once: a terminal state is followed by nothing, except a failed attempt
    by the retry that reopens it.
    """
    states = {}
    for job_id, stream in streams.items():
        state = JobState()
        for index, recorded in enumerate(stream):
            state = decide(state, recorded.event)
            if state.status in TERMINAL and index + 1 < len(stream):
                following = stream[index + 1].event
                assert isinstance(following, JobRetryScheduled), _types(stream)
        assert state.status in TERMINAL, f"job {job_id} never ended: {_types(stream)}"
        states[job_id] = state
    return states


def _types(stream: Sequence[RecordedEvent]) -> list[str]:
    return [type(r.event).__name__ for r in stream]
