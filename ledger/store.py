"""The event store: append to streams, read a stream, tail everything in commit order.

Functions take an open ``psycopg.AsyncConnection`` so callers choose the
transaction: on an autocommit connection an append is its own one-statement
transaction; inside ``conn.transaction()`` it commits with the caller's other work.
Waking readers after a commit is ledger/wakeup.py's job, not the append's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, LiteralString
from uuid import UUID

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from ledger.codec import converter, decode, encode, json_text
from ledger.errors import ConcurrencyConflict
from ledger.events import Event, Metadata
from ledger.sqlfile import load_queries

__all__ = [
    "Appended",
    "Checkpoint",
    "RecordedEvent",
    "StreamWrite",
    "append",
    "append_arguments",
    "append_many",
    "execute_appending",
    "flush",
    "head",
    "read_after",
    "read_stream",
    "stream_version",
]

_QUERIES = load_queries(Path(__file__).with_name("store.sql"))


@attrs.frozen(kw_only=True)
class StreamWrite:
    """Events to add to one stream, and the version the writer saw it at."""

    stream_id: UUID
    #: The stream's version the writer decided on; 0 for a new stream.
    expected_version: int
    events: Sequence[Event]
    metadata: Metadata


@attrs.frozen(kw_only=True)
class RecordedEvent:
    """An event as the ledger holds it."""

    #: Global order of insertion (not of commit: see Checkpoint).
    position: int
    stream_id: UUID
    #: 1 for a stream's first event, then one more per event.
    version: int
    event: Event
    metadata: Metadata
    recorded_at: dt.datetime
    #: The id of the transaction that wrote it.
    txid: int

    @property
    def type(self) -> str:
        return type(self.event).__name__


@attrs.frozen(kw_only=True, order=True)
class Checkpoint:
    """How far a reader has read, in commit-safe (txid, position) order."""

    txid: int = 0
    position: int = 0

    @classmethod
    def after(cls, event: RecordedEvent) -> Checkpoint:
        return cls(txid=event.txid, position=event.position)


@attrs.frozen(kw_only=True)
class Appended:
    position: int
    stream_id: UUID
    version: int
    recorded_at: dt.datetime


async def append(
    conn: psycopg.AsyncConnection[Any],
    stream_id: UUID,
    expected_version: int,
    events: Sequence[Event],
    metadata: Metadata,
) -> list[Appended]:
    """Append *events* to one stream, which must be at *expected_version*.

    Raises ConcurrencyConflict when another writer moved the stream on first.
    """
    write = StreamWrite(
        stream_id=stream_id, expected_version=expected_version, events=events, metadata=metadata
    )
    return await append_many(conn, [write])


async def append_many(
    conn: psycopg.AsyncConnection[Any], writes: Sequence[StreamWrite]
) -> list[Appended]:
    """Append to several streams in one statement: all the writes land, or none does.

    Raises ConcurrencyConflict when another writer moved one of the streams on first.
    """
    if not any(write.events for write in writes):
        return []
    return await _insert(conn, _QUERIES["append"], append_arguments(writes))


def append_arguments(writes: Sequence[StreamWrite]) -> dict[str, Jsonb]:
    """The arguments of the database's append_events_v2 function for *writes*, by name: the
    events as one JSON document (migrations/040_open_jobs.sql).

    A statement of another part of qgjob that appends (``select … append_events_v2(…)``)
    takes them as they are, and runs through ``execute_appending``.
    """
    events = []
    streams = set()
    for write in writes:
        if write.stream_id in streams:
            raise ValueError(f"stream {write.stream_id} appears in two writes of one append")
        streams.add(write.stream_id)
        metadata = converter.unstructure(write.metadata)
        for nth, event in enumerate(write.events, start=1):
            type_name, data = encode(event)
            events.append(
                {
                    "stream_id": write.stream_id,
                    "expected_version": write.expected_version,
                    "nth": nth,
                    "type": type_name,
                    "data": data,
                    "metadata": metadata,
                }
            )
    return {"events": Jsonb(events, dumps=json_text)}


async def _insert(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, parameters: Mapping[str, Any]
) -> list[Appended]:
    cursor = await execute_appending(conn, query, parameters)
    return [
        Appended(position=position, stream_id=stream_id, version=version, recorded_at=at)
        for position, stream_id, version, at in await cursor.fetchall()
    ]


async def execute_appending(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, parameters: Mapping[str, Any]
) -> psycopg.AsyncCursor[Any]:
    """Run a statement that appends; raises ConcurrencyConflict when it lost a race on a
    stream (another writer moved it on first)."""
    try:
        return await conn.execute(query, parameters)
    except (pg_errors.UniqueViolation, pg_errors.SerializationFailure) as error:
        # The one place a lost race on a stream becomes a domain error.
        raise ConcurrencyConflict(
            f"{ConcurrencyConflict.__doc__} ({error.diag.message_primary})"
        ) from error


async def flush(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wait until every commit so far is on disk, those made with synchronous_commit off
    included. *conn* must be in autocommit mode, outside a transaction."""
    await conn.execute(_QUERIES["flush"])


async def read_stream(conn: psycopg.AsyncConnection[Any], stream_id: UUID) -> list[RecordedEvent]:
    cursor = await conn.execute(_QUERIES["read_stream"], {"stream_id": stream_id})
    return [_recorded(row) for row in await cursor.fetchall()]


async def stream_version(conn: psycopg.AsyncConnection[Any], stream_id: UUID) -> int:
    cursor = await conn.execute(_QUERIES["stream_version"], {"stream_id": stream_id})
    row = await cursor.fetchone()
    assert row is not None
    version: int = row[0]
    return version


async def read_after(
    conn: psycopg.AsyncConnection[Any], checkpoint: Checkpoint, limit: int = 1000
) -> list[RecordedEvent]:
    """The next events after *checkpoint* in commit-safe order, at most *limit* of them.

    Never skips an event that commits late and never returns one twice, as long
    as the caller passes ``Checkpoint.after(last event returned)`` next time.
    """
    cursor = await conn.execute(
        _QUERIES["read_after"],
        {"txid": checkpoint.txid, "position": checkpoint.position, "limit": limit},
    )
    return [_recorded(row) for row in await cursor.fetchall()]


async def head(conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
    """The checkpoint after the newest readable event (the start for "from now on")."""
    cursor = await conn.execute(_QUERIES["head"])
    row = await cursor.fetchone()
    return Checkpoint() if row is None else Checkpoint(txid=row[0], position=row[1])


def _recorded(row: tuple[Any, ...]) -> RecordedEvent:
    position, stream_id, version, type_name, data, metadata, recorded_at, txid = row
    return RecordedEvent(
        position=position,
        stream_id=stream_id,
        version=version,
        event=decode(type_name, data),
        metadata=converter.structure(metadata, Metadata),
        recorded_at=recorded_at,
        txid=txid,
    )
