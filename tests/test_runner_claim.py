"""The claim transaction against real PostgreSQL: exclusive, limited per org, fenced by
leases, matched to what a slot offers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.capabilities import Platform
from ledger.decisions import fold
from ledger.errors import ConcurrencyConflict
from ledger.events import JobAssigned, JobCancelled, JobStarted, JobSubmitted, Target
from ledger.store import StreamWrite, append, append_many, read_stream
from runner._sql import QUERIES
from runner.claim import Claim, LeaseLost, SlotIdentity, claim_batch
from runner.policy import ClaimPolicy
from tests.support.factories import metadata
from tests.support.runner import submit

pytestmark = pytest.mark.anyio

POLICY = ClaimPolicy()


def jobs(n: int, *, org_id: str = "acme", apps: int = 1, **needs: Any) -> list[JobSubmitted]:
    return [
        JobSubmitted(
            org_id=org_id,
            app_version_id=f"app-{i % apps}",
            test_path=f"tests/t{i}.spec.ts",
            target=Target.EMULATOR,
            priority=1 + i % 10,
            **needs,
        )
        for i in range(n)
    ]


class Slots:
    """Slots of one agent, each with a connection of its own, claiming like an agent's would."""

    def __init__(
        self,
        conns: Sequence[psycopg.AsyncConnection[Any]],
        agent_id: str,
        offers: Sequence[dict[str, str]] = (),
    ) -> None:
        self.conns = conns
        self.agent_id = agent_id
        self.ids = [
            SlotIdentity(
                device_id=uuid.uuid4(),
                agent_id=agent_id,
                target="emulator",
                **(offers[index] if index < len(offers) else {}),
            )
            for index in range(len(conns))
        ]

    async def register(self) -> None:
        conn = self.conns[0]
        await conn.execute(
            QUERIES["acquire_lease"],
            {"agent_id": self.agent_id, "name": self.agent_id, "host": "h", "pid": 1, "ttl_s": 60},
        )
        for slot in self.ids:
            await conn.execute(
                QUERIES["register_slot"],
                {
                    "device_id": slot.device_id,
                    "agent_id": self.agent_id,
                    "target": "emulator",
                    "platform": slot.platform,
                    "device": slot.device,
                    "os_version": slot.os_version,
                },
            )

    async def claim(self, index: int) -> Claim | None:
        return await claim_batch(
            self.conns[index],
            self.ids[index],
            installed=[],
            policy=POLICY,
            default_timeout_s=60,
        )


@pytest.fixture
async def slots(db_url: str) -> AsyncIterator[Slots]:
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(8)]
    agent = Slots(conns, "agent-1")
    await agent.register()
    yield agent
    for conn in conns:
        await conn.close()


async def start(conn: psycopg.AsyncConnection[Any], claim: Claim) -> None:
    """Record the start of every job of *claim*, as its slot would."""
    writes = [
        StreamWrite(
            stream_id=job.job_id,
            expected_version=job.version,
            events=[JobStarted(attempt=job.attempt)],
            metadata=metadata(),
        )
        for job in claim.jobs
    ]
    await append_many(conn, writes)


async def event_types(url: str, job_ids: list[UUID]) -> list[list[str]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return [[r.type for r in await read_stream(conn, job_id)] for job_id in job_ids]


async def test_slots_claiming_at_once_never_take_the_same_job(db_url: str, slots: Slots) -> None:
    """Eight slots claim over and over until the queue is empty: every job is assigned
    exactly once, and each claim takes jobs of one group and app version."""
    ids = await submit(db_url, jobs(300, apps=5))

    async def drain(index: int) -> list[Claim]:
        """Claim, start the batch (else the next claim takes it up again), claim again."""
        claims = []
        while (claim := await slots.claim(index)) is not None:
            claims.append(claim)
            await start(slots.conns[index], claim)
        return claims

    claims = [c for batch in await asyncio.gather(*map(drain, range(8))) for c in batch]

    taken = Counter(job.job_id for claim in claims for job in claim.jobs)
    assert set(taken) == set(ids) and set(taken.values()) == {1}
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for job_id in ids[::25]:
            events = [r.event for r in await read_stream(conn, job_id)]
            assert sum(isinstance(e, JobAssigned) for e in events) == 1
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for claim in claims:
            cursor = await conn.execute(
                "select distinct data ->> 'group_id' from events "
                "where stream_id = any(%s) and type = 'JobGrouped'",
                ([job.job_id for job in claim.jobs],),
            )
            assert [row[0] for row in await cursor.fetchall()] == [str(claim.group_id)]


async def test_an_org_limit_holds_when_every_slot_claims_at_once(db_url: str, slots: Slots) -> None:
    """acme may hold 2 slots: of eight simultaneous claims two get acme's jobs, the rest
    get globex's."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(QUERIES["set_org_limit"], {"org_id": "acme", "max_slots": 2})
    await submit(db_url, jobs(40, org_id="acme", apps=4) + jobs(240, org_id="globex", apps=6))

    claims = await asyncio.gather(*map(slots.claim, range(8)))

    orgs = Counter(claim.org_id for claim in claims if claim is not None)
    assert orgs["acme"] == 2
    assert orgs["globex"] == 6


async def test_a_cancelled_job_is_not_claimed(db_url: str, slots: Slots) -> None:
    [job_id] = await submit(db_url, jobs(1))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        state = fold(r.event for r in await read_stream(conn, job_id))
        await append(conn, job_id, state.version, [JobCancelled()], metadata())

    assert await slots.claim(0) is None


async def test_a_cancel_racing_a_claim_waits_and_loses_cleanly(db_url: str, slots: Slots) -> None:
    """A claim holds the job's row when a cancel comes: the cancel waits for the claim,
    then loses on the version (no deadlock), and the job is the claim's."""
    [job_id] = await submit(db_url, jobs(1))
    claiming, cancelling = slots.conns[0], slots.conns[1]
    async with claiming.transaction():
        await claiming.execute("select 1 from open_jobs where job_id = %s for update", (job_id,))
        cancel = asyncio.create_task(
            append(cancelling, job_id, 2, [JobCancelled()], metadata())
        )
        await asyncio.sleep(0.2)
        assert not cancel.done(), "the cancel did not wait for the claim's row"
        await append(
            claiming,
            job_id,
            2,
            [JobAssigned(attempt=1, device_id=slots.ids[0].device_id, agent_id=slots.agent_id)],
            metadata(),
        )
    with pytest.raises(ConcurrencyConflict):
        await cancel
    assert await event_types(db_url, [job_id]) == [["JobSubmitted", "JobGrouped", "JobAssigned"]]


async def test_an_agent_whose_lease_lapsed_cannot_claim(db_url: str, slots: Slots) -> None:
    job_ids = await submit(db_url, jobs(5))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("update agent_leases set expires_at = now()")

    with pytest.raises(LeaseLost):
        await slots.claim(0)
    assert await event_types(db_url, job_ids) == [["JobSubmitted", "JobGrouped"]] * 5


async def test_a_claim_takes_a_chunk_of_the_best_jobs_of_one_group(
    db_url: str, slots: Slots
) -> None:
    """40 jobs of one app on 8 slots: a claim takes max(min_batch, 40 / 8) = 16 jobs, the
    highest priorities first."""
    ids = await submit(db_url, jobs(40))
    claim = await slots.claim(0)

    assert claim is not None and len(claim.jobs) == POLICY.min_batch == 16
    priorities = {job_id: 1 + i % 10 for i, job_id in enumerate(ids)}
    assert sorted(priorities[job.job_id] for job in claim.jobs) == sorted([7, 8, 9, 10] * 4)
    assert all(job.attempt == 1 and job.version == 3 for job in claim.jobs)


async def test_a_slot_takes_up_a_batch_it_claimed_without_hearing_back(
    db_url: str, slots: Slots
) -> None:
    """A claim may commit while its connection breaks: the slot's next claim takes up
    those jobs again, assigning nothing anew."""
    ids = await submit(db_url, jobs(3))
    first = await slots.claim(0)
    assert first is not None

    again = await slots.claim(0)

    assert again is not None
    assert {job.job_id for job in again.jobs} == set(ids)
    assert all(job.attempt == 1 and job.version == 3 for job in again.jobs)
    assert await event_types(db_url, ids) == [["JobSubmitted", "JobGrouped", "JobAssigned"]] * 3


async def test_a_slot_claims_only_jobs_its_capabilities_meet(db_url: str) -> None:
    """Android, iOS and profiled jobs each go to a slot that meets every stated need; a
    job for a device nobody has stays unclaimed, and the queue view says why."""
    offers = [
        {"platform": "android", "device": "Pixel 8", "os_version": "14.1"},
        {"platform": "ios", "device": "iPhone 15", "os_version": "17.2"},
        {"platform": "android", "device": "Pixel 7", "os_version": "13"},
    ]
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in offers]
    fleet = Slots(conns, "lab", offers)
    await fleet.register()
    try:
        ios = await submit(db_url, jobs(2, platform=Platform.IOS))
        pixel_8 = await submit(db_url, jobs(2, org_id="globex", device="pixel 8", os_version="14"))
        nobody = await submit(db_url, jobs(1, org_id="initech", device="Galaxy S24"))

        claimed = {index: await fleet.claim(index) for index in range(len(offers))}
        again = {index: await fleet.claim(index) for index in range(len(offers))}
    finally:
        for conn in conns:
            await conn.close()

    def taken(index: int) -> set[UUID]:
        claims = [claim for claim in (claimed[index], again[index]) if claim is not None]
        return {job.job_id for claim in claims for job in claim.jobs}

    assert taken(0) == set(pixel_8)
    assert taken(1) == set(ios)
    assert taken(2) == set()
    assert await event_types(db_url, nobody) == [["JobSubmitted", "JobGrouped"]]
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cursor = await conn.execute("select job_id, unschedulable from queue")
        assert await cursor.fetchall() == [
            (nobody[0], "no live emulator slot offers device Galaxy S24")
        ]
