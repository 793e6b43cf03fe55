"""Reading the ledger for the projector: every event after a checkpoint, decoded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import orjson
import psycopg

from ledger.codec import converter, decode
from ledger.events import Event, Metadata
from ledger.sqlfile import load_queries
from ledger.store import Checkpoint, read_stream

__all__ = ["Read", "read_events", "read_stream_events"]

_QUERIES = load_queries(Path(__file__).with_name("reading.sql"))
# Events are immutable values, so one decoded event can stand for every stored copy of
# its payload. Bounded: emptied when full.
_DECODED: dict[tuple[str, str], Event] = {}
_DECODED_AT_MOST = 20_000


@attrs.frozen(kw_only=True)
class Read:
    """An event as the projector reads it."""

    position: int
    stream_id: UUID
    version: int
    event: Event
    recorded_at: dt.datetime
    txid: int
    #: Read for JobSubmitted only: its org and correlation id go on the JobGrouped.
    metadata: Metadata | None

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint just after this event."""
        return Checkpoint(txid=self.txid, position=self.position)


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


async def read_stream_events(conn: psycopg.AsyncConnection[Any], stream_id: UUID) -> list[Read]:
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
