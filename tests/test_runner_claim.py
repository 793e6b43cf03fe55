"""The claim transaction against real PostgreSQL: exclusive, limited per org, fenced by leases."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.decisions import JobStatus, fold
from ledger.events import (
    JobAssigned,
    JobCancelled,
    JobRetryScheduled,
    JobSubmitted,
    Target,
)
from ledger.store import append, read_stream
from ledger.wakeup import Channel
from projections.projector import Projector
from runner._sql import QUERIES
from runner.claim import BatchGiven, Claim, LeaseLost, SlotIdentity, claim_batch
from runner.fresh import FreshJobs
from runner.policy import ClaimPolicy
from runner.queue_view import QueueView, UnitKey
from runner.rescue import hand_back_unknown
from runner.standing import stand
from tests.support.factories import metadata
from tests.support.runner import submit, submit_as_api, submit_grouped

pytestmark = pytest.mark.anyio

POLICY = ClaimPolicy()


def jobs(n: int, *, org_id: str = "acme", apps: int = 1) -> list[JobSubmitted]:
    return [
        JobSubmitted(
            org_id=org_id,
            app_version_id=f"app-{i % apps}",
            test_path=f"tests/t{i}.spec.ts",
            target=Target.EMULATOR,
            priority=1 + i % 10,
        )
        for i in range(n)
    ]


class Slots:
    """Slots of one agent, each with a connection of its own, claiming like an agent's would."""

    def __init__(self, conns: Sequence[psycopg.AsyncConnection[Any]], agent_id: str) -> None:
        self.conns = conns
        self.agent_id = agent_id
        self.ids = [
            SlotIdentity(device_id=uuid.uuid4(), agent_id=agent_id, target="emulator")
            for _ in conns
        ]
        self.view = QueueView("emulator", agent_id, ttl_s=0.0)
        self.running: dict[UUID, UnitKey] = {}
        #: The jobs of each slot's last batch, which its next claim ends.
        self.last_batch: dict[UUID, list[UUID]] = {}

    async def register(self) -> None:
        conn = self.conns[0]
        await conn.execute(
            QUERIES["acquire_lease"],
            {"agent_id": self.agent_id, "name": self.agent_id, "host": "h", "pid": 1, "ttl_s": 60},
        )
        for slot in self.ids:
            await conn.execute(
                QUERIES["register_slot"],
                {"device_id": slot.device_id, "agent_id": self.agent_id, "target": "emulator"},
            )

    async def claim(self, index: int, *, fresh: FreshJobs | None = None) -> Claim | None:
        """Claim for slot *index*; with *fresh*, as an idle slot would (fresh jobs first)."""
        device_id = self.ids[index].device_id
        self.running.pop(device_id, None)
        claim = await claim_batch(
            self.conns[index],
            self.ids[index],
            view=self.view,
            running=self.running,
            installed=[],
            policy=POLICY,
            default_timeout_s=60,
            fresh=fresh,
            fresh_first=fresh is not None,
            last_batch=self.last_batch.get(device_id, []),
        )
        self.last_batch[device_id] = [] if claim is None else [j.job_id for j in claim.jobs]
        return claim

    async def stand(self, index: int, *, installed: str | None = None) -> None:
        """Leave slot *index*'s standing claim, as a slot that found nothing does."""
        device_id = self.ids[index].device_id
        await stand(
            self.conns[index],
            self.ids[index],
            last_batch=self.last_batch.get(device_id, []),
            installed=installed,
        )
        self.last_batch[device_id] = []


@pytest.fixture
async def slots(db_url: str) -> AsyncIterator[Slots]:
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(8)]
    agent = Slots(conns, "agent-1")
    await agent.register()
    yield agent
    for conn in conns:
        await conn.close()


def heard(payload: str) -> FreshJobs:
    """The fresh jobs of an agent that heard *payload*."""
    fresh = FreshJobs()
    fresh.heard(Channel.JOBS, payload)
    return fresh


async def submit_one(url: str, job: JobSubmitted) -> UUID:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await submit_as_api(conn, job)


async def assigned_to(url: str, job_id: UUID) -> UUID | None:
    """The device of the job's last JobAssigned, if any."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        assigned = [r.event for r in await read_stream(conn, job_id)]
    devices = [event.device_id for event in assigned if isinstance(event, JobAssigned)]
    return devices[-1] if devices else None


async def event_types(url: str, job_ids: list[UUID]) -> list[list[str]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return [[r.type for r in await read_stream(conn, job_id)] for job_id in job_ids]


async def project(url: str, new_jobs: list[JobSubmitted]) -> list[UUID]:
    ids = await submit(url, new_jobs)
    await Projector(url).catch_up()
    return ids


async def test_slots_claiming_at_once_never_take_the_same_job(db_url: str, slots: Slots) -> None:
    """Eight slots claim over and over until the queue is empty: every job is assigned
    exactly once, though the projection never learns of the assignments meanwhile."""
    ids = await project(db_url, jobs(300, apps=5))

    async def drain(index: int) -> list[Claim]:
        claims = []
        while (claim := await slots.claim(index)) is not None:
            claims.append(claim)
        return claims

    claims = [c for batch in await asyncio.gather(*map(drain, range(8))) for c in batch]

    taken = Counter(job.job_id for claim in claims for job in claim.jobs)
    assert set(taken) == set(ids) and set(taken.values()) == {1}
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for job_id in ids[::25]:
            events = [r.event for r in await read_stream(conn, job_id)]
            assert sum(isinstance(e, JobAssigned) for e in events) == 1
    for claim in claims:
        assert len({(job.state.group_id, claim.app_version_id) for job in claim.jobs}) == 1


async def test_an_org_limit_holds_when_every_slot_claims_at_once(db_url: str, slots: Slots) -> None:
    """acme may hold 2 slots: of eight simultaneous claims two get acme's jobs, the rest
    get globex's."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(QUERIES["set_org_limit"], {"org_id": "acme", "max_slots": 2})
    await project(db_url, jobs(40, org_id="acme", apps=4) + jobs(240, org_id="globex", apps=6))

    claims = await asyncio.gather(*map(slots.claim, range(8)))

    orgs = Counter(claim.org_id for claim in claims if claim is not None)
    assert orgs["acme"] == 2
    assert orgs["globex"] == 6


async def test_a_job_moved_on_since_the_projection_saw_it_is_not_claimed(
    db_url: str, slots: Slots
) -> None:
    """A cancel the projector has not applied yet: the row still says grouped, but the
    ledger has moved on, so the claim leaves the job alone."""
    [job_id] = await project(db_url, jobs(1))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        state = fold(r.event for r in await read_stream(conn, job_id))
        await append(conn, job_id, state.version, [JobCancelled()], metadata())

    assert await slots.claim(0) is None


async def test_an_agent_whose_lease_lapsed_cannot_claim(db_url: str, slots: Slots) -> None:
    await project(db_url, jobs(5))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("update agent_leases set expires_at = now()")

    with pytest.raises(LeaseLost):
        await slots.claim(0)


async def test_an_agent_whose_lease_lapsed_cannot_claim_a_fresh_job(
    db_url: str, slots: Slots
) -> None:
    job_ids, payload = await submit_grouped(db_url, jobs(3))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("update agent_leases set expires_at = now()")

    with pytest.raises(LeaseLost):
        await slots.claim(0, fresh=heard(payload))
    assert await event_types(db_url, job_ids) == [["JobSubmitted", "JobGrouped"]] * 3


async def test_fresh_jobs_announced_to_two_agents_are_assigned_once(
    db_url: str, slots: Slots
) -> None:
    job_ids, payload = await submit_grouped(db_url, jobs(2))

    first = await slots.claim(0, fresh=heard(payload))
    second = await slots.claim(1, fresh=heard(payload))

    assert first is not None and {job.job_id for job in first.jobs} == set(job_ids)
    assert second is None
    assert await event_types(db_url, job_ids) == [["JobSubmitted", "JobGrouped", "JobAssigned"]] * 2


async def test_a_claim_takes_a_chunk_of_the_best_jobs_of_one_group(
    db_url: str, slots: Slots
) -> None:
    """40 jobs of one app on 8 slots: a claim takes max(min_batch, 40 / 8) = 16 jobs, the
    highest priorities first."""
    ids = await project(db_url, jobs(40))
    claim = await slots.claim(0)

    assert claim is not None and len(claim.jobs) == POLICY.min_batch == 16
    priorities = {job_id: 1 + i % 10 for i, job_id in enumerate(ids)}
    assert sorted(priorities[job.job_id] for job in claim.jobs) == sorted([7, 8, 9, 10] * 4)
    assert all(job.attempt == 1 and job.version == 3 for job in claim.jobs)


async def test_a_slot_hands_back_a_batch_it_claimed_without_hearing_back(
    db_url: str, slots: Slots
) -> None:
    """After a lost connection, a claim may have committed unseen: on reconnecting the
    slot finds its occupancy and hands those jobs back, uncounted."""
    await project(db_url, jobs(3))
    claim = await slots.claim(0)
    assert claim is not None

    handed = await hand_back_unknown(
        slots.conns[1], slots.ids[0].device_id, slots.agent_id, "runner:agent-1"
    )

    assert handed == 3
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for job in claim.jobs:
            history = [r.event for r in await read_stream(conn, job.job_id)]
            retry = history[-1]
            assert isinstance(retry, JobRetryScheduled) and retry.handed_back
            assert fold(history).status == JobStatus.RETRYING


async def test_a_submit_gives_its_job_to_the_best_standing_slot(db_url: str, slots: Slots) -> None:
    """Of the slots standing for the job's target, the one with its app installed gets
    it, then the one idle longest; with none left standing, the job waits to be claimed."""
    await slots.stand(0)
    await slots.stand(1, installed="app-7")
    await slots.stand(2)
    app_7, other, another, unserved = [
        JobSubmitted(org_id="acme", app_version_id=app, test_path=f"t{i}", target=Target.EMULATOR)
        for i, app in enumerate(["app-7", "app-1", "app-2", "app-3"])
    ]

    assert await assigned_to(db_url, await submit_one(db_url, app_7)) == slots.ids[1].device_id
    assert await assigned_to(db_url, await submit_one(db_url, other)) == slots.ids[0].device_id
    assert await assigned_to(db_url, await submit_one(db_url, another)) == slots.ids[2].device_id
    assert await assigned_to(db_url, await submit_one(db_url, unserved)) is None


async def test_a_claim_that_lost_its_standing_claim_to_a_submit_learns_it(
    db_url: str, slots: Slots
) -> None:
    """The slot's own claim withdraws its standing claim; one a submit fulfilled first
    says so (BatchGiven) and assigns nothing, so the job has one owner."""
    await slots.stand(0)
    given = await submit_one(db_url, jobs(1)[0])
    fresh_ids, payload = await submit_grouped(db_url, jobs(1, org_id="globex"))

    with pytest.raises(BatchGiven):
        await slots.claim(0, fresh=heard(payload))

    assert await assigned_to(db_url, given) == slots.ids[0].device_id
    assert await event_types(db_url, fresh_ids) == [["JobSubmitted", "JobGrouped"]]


async def test_no_standing_claim_serves_an_org_with_a_limit_or_a_lapsed_agent(
    db_url: str, slots: Slots
) -> None:
    """An org's limit is counted by the slots' own claims; a lapsed agent gets nothing."""
    await slots.stand(0)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(QUERIES["set_org_limit"], {"org_id": "acme", "max_slots": 5})
        limited = await submit_one(db_url, jobs(1, org_id="acme")[0])
        await conn.execute("update agent_leases set expires_at = now()")
        lapsed = await submit_one(db_url, jobs(1, org_id="globex")[0])

    assert await assigned_to(db_url, limited) is None
    assert await assigned_to(db_url, lapsed) is None
