"""Helpers for the projector's tests: appending job histories, reading the projection back."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ledger.events import Event, Metadata
from ledger.store import append, read_stream
from tests.support.factories import metadata

#: The projection tables and the columns that order their rows.
TABLES = {
    "jobs": "job_id",
    "groups": "group_id",
    "devices": "device_id",
    "queue_depth": "org_id, target, status",
}

Snapshot = dict[str, list[tuple[Any, ...]]]


async def snapshot(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    """Every row of every projection table, in a stable order."""
    rows: Snapshot = {}
    for table, order in TABLES.items():
        cursor = await conn.execute(
            sql.SQL("select * from {} order by {}").format(sql.Identifier(table), sql.SQL(order))
        )
        rows[table] = await cursor.fetchall()
    return rows


async def record(
    conn: psycopg.AsyncConnection[Any],
    stream_id: uuid.UUID,
    *events: Event,
    meta: Metadata | None = None,
) -> None:
    """Append *events* to the stream at whatever version it is now."""
    version = len(await read_stream(conn, stream_id))
    await append(conn, stream_id, version, list(events), meta or metadata())


async def fetch(
    conn: psycopg.AsyncConnection[Any], query: str, *params: object
) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(query.encode(), params or None)
    return await cursor.fetchall()


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def fresh_database(server_url: str, template: str) -> Iterator[str]:
    """A database cloned from the migrated *template*, dropped afterwards."""
    name = f"qgjob_projector_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield psycopg.conninfo.make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def types(events: Sequence[Any]) -> list[str]:
    return [type(e.event).__name__ for e in events]
