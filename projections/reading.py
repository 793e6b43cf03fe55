"""Reading the ledger for the projector: its checkpoint, every event after it, decoded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import orjson
import psycopg
from psycopg.types.json import set_json_loads

from ledger.codec import converter, decode
from ledger.events import Event, Metadata
from ledger.sqlfile import load_queries
from ledger.store import Checkpoint, read_stream

__all__ = ["Read", "connect", "fill_gaps", "read_checkpoint", "read_events"]

_QUERIES = load_queries(Path(__file__).with_name("reading.sql"))
# Events are immutable values, so one decoded event can stand for every stored copy of
# its payload. Bounded: emptied when full.
_DECODED: dict[tuple[str, str], Event] = {}
_DECODED_AT_MOST = 20_000


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection for applying batches.

    JSON is parsed with orjson: the projector parses two documents per event, and the
    standard library's parser was a fifth of its time.
    """
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    set_json_loads(orjson.loads, conn)
    return conn


@attrs.frozen(kw_only=True)
class Read:
    """An event as the projector reads it."""

    position: int
    stream_id: UUID
    version: int
    event: Event
    recorded_at: dt.datetime
    txid: int
    #: Read for JobSubmitted, whose org and correlation id go on the JobGrouped, and for
    #: AppInstalled, whose org owns the installed app.
    metadata: Metadata | None

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint just after this event."""
        return Checkpoint(txid=self.txid, position=self.position)


async def read_checkpoint(conn: psycopg.AsyncConnection[Any], name: str) -> Checkpoint:
    """Where the projection called *name* has read up to (the start, the first time)."""
    params = {"name": name}
    row = await (await conn.execute(_QUERIES["read_checkpoint"], params)).fetchone()
    if row is None:
        # Another applier created the row meanwhile, after this statement's snapshot.
        row = await (await conn.execute(_QUERIES["read_checkpoint"], params)).fetchone()
    assert row is not None
    return Checkpoint(txid=row[0], position=row[1])


async def read_events(
    conn: psycopg.AsyncConnection[Any], checkpoint: Checkpoint, limit: int
) -> list[Read]:
    """The next events after *checkpoint* in commit-safe order, at most *limit*."""
    cursor = conn.cursor(binary=True)
    await cursor.execute(
        _QUERIES["read_events"],
        {"txid": checkpoint.txid, "position": checkpoint.position, "limit": limit},
    )
    return [
        Read(
            position=position,
            stream_id=stream_id,
            version=version,
            event=_decoded(type_name, data),
            recorded_at=recorded_at,
            txid=txid,
            metadata=None if metadata is None else converter.structure(metadata, Metadata),
        )
        for position, stream_id, version, type_name, data, recorded_at, txid, metadata in (
            await cursor.fetchall()
        )
    ]


def _decoded(type_name: str, data: str) -> Event:
    key = (type_name, data)
    event = _DECODED.get(key)
    if event is None:
        if len(_DECODED) >= _DECODED_AT_MOST:
            _DECODED.clear()
        event = _DECODED[key] = decode(type_name, orjson.loads(data))
    return event


async def _read_stream_events(conn: psycopg.AsyncConnection[Any], stream_id: UUID) -> list[Read]:
    """Every event of one stream, in version order."""
    return [
        Read(
            position=e.position,
            stream_id=e.stream_id,
            version=e.version,
            event=e.event,
            recorded_at=e.recorded_at,
            txid=e.txid,
            metadata=e.metadata,
        )
        for e in await read_stream(conn, stream_id)
    ]


async def fill_gaps(
    conn: psycopg.AsyncConnection[Any], events: list[Read], versions: dict[UUID, int]
) -> list[Read]:
    """*events*, with any earlier event of a stream that commit order put later moved before.

    *versions* is each known stream's version before *events*. Commit order is not
    always version order within a stream: a transaction that got its id early can append
    version 2 after another one committed version 1. When an event's stream is not at
    the version just before it, the missing events (committed, since their writer saw
    them) are read from the stream and applied first; they are skipped when the reader
    reaches them.
    """
    versions = dict(versions)
    filled: list[Read] = []
    for recorded in events:
        seen = versions.get(recorded.stream_id, 0)
        if recorded.version > seen + 1:
            stream = await _read_stream_events(conn, recorded.stream_id)
            filled.extend(e for e in stream if seen < e.version < recorded.version)
        filled.append(recorded)
        versions[recorded.stream_id] = max(seen, recorded.version)
    return filled
