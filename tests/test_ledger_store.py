"""The event store: appends, conflicts, stream reads and the append-only guarantee."""

from __future__ import annotations

import uuid

import anyio
import psycopg
import pytest

from ledger import ConcurrencyConflict, StreamWrite, append, append_many, read_stream
from ledger.events import JobGrouped, JobStarted
from tests.support.factories import metadata, submitted

pytestmark = pytest.mark.anyio


async def test_append_then_read_stream_returns_events_in_version_order(db_url: str) -> None:
    job = uuid.uuid4()
    group = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        first = await append(conn, job, 0, [submitted()], metadata())
        second = await append(
            conn, job, 1, [JobGrouped(group_id=group, strategy="app_version", group_key="k")],
            metadata(actor="projector"),
        )
        events = await read_stream(conn, job)
    assert [a.version for a in first + second] == [1, 2]
    assert [e.event for e in events] == [
        submitted(),
        JobGrouped(group_id=group, strategy="app_version", group_key="k"),
    ]
    assert events[1].metadata.actor == "projector"
    assert events[0].position < events[1].position


async def test_two_concurrent_appends_at_one_version_one_wins_one_conflicts(db_url: str) -> None:
    job = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await append(conn, job, 0, [submitted()], metadata())
    outcomes: list[str] = []

    async def writer(group_key: str) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            try:
                async with conn.transaction():
                    event = JobGrouped(group_id=uuid.uuid4(), strategy="s", group_key=group_key)
                    await append(conn, job, 1, [event], metadata())
                    # Both writers hold their transaction open until both have appended.
                    await both_appended.wait()
            except ConcurrencyConflict:
                outcomes.append("conflict")
            else:
                outcomes.append(group_key)

    both_appended = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer, "a")
        tasks.start_soon(writer, "b")
        await anyio.sleep(0.3)  # let both reach the insert; the loser blocks on the unique index
        both_appended.set()
    assert sorted(outcomes)[0] in {"a", "b"}
    assert outcomes.count("conflict") == 1
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert [e.version for e in await read_stream(conn, job)] == [1, 2]


@pytest.mark.parametrize("events", [1, 2], ids=["one event", "several events"])
async def test_append_ahead_of_the_stream_is_a_conflict_not_a_gap(
    db_url: str, events: int
) -> None:
    job = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await append(conn, job, 0, [submitted()], metadata())
        with pytest.raises(ConcurrencyConflict):
            await append(conn, job, 5, [JobStarted(attempt=1)] * events, metadata())
        assert len(await read_stream(conn, job)) == 1


async def test_multi_stream_append_is_all_or_nothing(db_url: str) -> None:
    fresh, taken = uuid.uuid4(), uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await append(conn, taken, 0, [submitted()], metadata())
        with pytest.raises(ConcurrencyConflict):
            await append_many(
                conn,
                [
                    StreamWrite(
                        stream_id=fresh, expected_version=0, events=[submitted()],
                        metadata=metadata(),
                    ),
                    StreamWrite(
                        stream_id=taken, expected_version=0, events=[submitted()],
                        metadata=metadata(),
                    ),
                ],
            )
        assert await read_stream(conn, fresh) == []


@pytest.mark.parametrize(
    "statement",
    [
        "update events set type = 'JobPassed'",
        "delete from events",
        "truncate events",
    ],
)
async def test_database_refuses_to_change_or_remove_events(db_url: str, statement: str) -> None:
    job = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await append(conn, job, 0, [submitted()], metadata())
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await conn.execute(statement.encode())
        assert len(await read_stream(conn, job)) == 1
