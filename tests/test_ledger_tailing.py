"""Tailing the ledger in commit-safe order: never skip an event that commits late, never repeat."""

from __future__ import annotations

import random
import uuid

import anyio
import psycopg
import pytest

from ledger import Checkpoint, RecordedEvent, append, read_after
from tests.support.factories import metadata, submitted

pytestmark = pytest.mark.anyio


class Tail:
    """A reader that keeps a checkpoint and collects what it reads, like a projector."""

    def __init__(self, conn: psycopg.AsyncConnection[object]) -> None:
        self.conn = conn
        self.checkpoint = Checkpoint()
        self.seen: list[RecordedEvent] = []

    async def poll(self) -> list[RecordedEvent]:
        batch = await read_after(self.conn, self.checkpoint, limit=100)
        if batch:
            self.checkpoint = Checkpoint.after(batch[-1])
            self.seen.extend(batch)
        return batch


async def test_reader_waits_for_a_slow_commit_instead_of_skipping_it(db_url: str) -> None:
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    async with (
        await psycopg.AsyncConnection.connect(db_url) as slow,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as fast,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as reader,
    ):
        tail = Tail(reader)
        async with slow.transaction():
            await append(slow, job_a, 0, [submitted(test_path="a.spec.js")], metadata())
            await append(fast, job_b, 0, [submitted(test_path="b.spec.js")], metadata())
            # B is committed and A is not: reading B now would move the checkpoint past A.
            assert await tail.poll() == []
        await tail.poll()
        await tail.poll()
    assert [e.stream_id for e in tail.seen] == [job_a, job_b]


async def test_many_concurrent_writers_each_event_is_read_exactly_once(db_url: str) -> None:
    writers, per_writer = 8, 500
    rng = random.Random(7)
    delays = [[rng.random() < 0.05 for _ in range(per_writer)] for _ in range(writers)]
    written: set[uuid.UUID] = set()
    done = anyio.Event()

    async def writer(index: int) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            for slow in delays[index]:
                job = uuid.uuid4()
                async with conn.transaction():
                    await append(conn, job, 0, [submitted()], metadata())
                    if slow:
                        await anyio.sleep(0.01)  # hold the commit back while others commit
                written.add(job)

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as reader:
        tail = Tail(reader)

        async def read_while_writing() -> None:
            while not done.is_set():
                if not await tail.poll():
                    await anyio.sleep(0.001)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_while_writing)
            async with anyio.create_task_group() as writing:
                for index in range(writers):
                    writing.start_soon(writer, index)
            done.set()
        while await tail.poll():
            pass
    seen = [e.stream_id for e in tail.seen]
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == written, "an event was skipped"
    assert len(seen) == writers * per_writer
