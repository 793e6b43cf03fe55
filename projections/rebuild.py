"""Rebuilding the projection from the first event, while the live projector keeps running.

The ledger is replayed into fresh copies of the projection tables, in a schema of
their own: the replay runs the projector's own batch code with that schema first
on its search path, so the same statements fill the copies. Then one transaction
swaps the copies in: it takes the live checkpoint row (waiting for a live batch in
progress, and holding the next one back), makes the live tables equal to the copies
(deleting, inserting and updating only rows that differ) and sets the live
checkpoint to where the replay stopped. The live projector notices that its
checkpoint moved, forgets what it remembered, and carries on from there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ledger.errors import QgjobError
from ledger.sqlfile import load_queries
from ledger.wakeup import Channel, Notifier
from projections.batch import BatchApplier, connect

__all__ = ["PROJECTION_TABLES", "RebuildRunning", "rebuild"]

_log = logging.getLogger(__name__)
_QUERIES = load_queries(Path(__file__).with_name("rebuild.sql"))

#: The tables a projector writes, with their primary keys.
PROJECTION_TABLES: dict[str, tuple[str, ...]] = {
    "jobs": ("job_id",),
    "groups": ("group_id",),
    "devices": ("device_id",),
    "queue_depth": ("org_id", "target", "status"),
}
_CHECKPOINTS = "projector_checkpoints"


class RebuildRunning(QgjobError):
    """A rebuild of this projection is already running."""


async def rebuild(url: str, name: str = "main", *, batch_size: int = 1000) -> int:
    """Replay every event into projector *name*'s tables; return how many were replayed."""
    shadow = f"qgjob_rebuild_{name}"[:63]
    async with await connect(url) as admin:
        cursor = await admin.execute(_QUERIES["try_lock"], {"name": name})
        row = await cursor.fetchone()
        if row is None or not row[0]:
            raise RebuildRunning(f"a rebuild of projection {name!r} is already running")
        live = await _live_schema(admin)
        await _create_copies(admin, shadow, live)
        async with await connect(url) as conn, await connect(url) as ahead:
            for replaying in (conn, ahead):
                await replaying.execute(
                    sql.SQL("set search_path to {}, {}").format(
                        sql.Identifier(shadow), sql.Identifier(live)
                    )
                )
            replayed = await BatchApplier(name, batch_size).apply_all(conn, ahead)
        await _swap(admin, name, shadow, live)
        await admin.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(shadow)))
    async with Notifier(url, channels=(Channel.PROJECTIONS,)) as notifier:
        notifier.poke()
    _log.info("rebuilt projection %s from %d events", name, replayed)
    return replayed


async def _live_schema(conn: psycopg.AsyncConnection[Any]) -> str:
    cursor = await conn.execute(_QUERIES["live_schema"])
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        raise QgjobError("the projection tables are missing; run `qgjobd migrate` first")
    schema: str = row[0]
    return schema


async def _create_copies(conn: psycopg.AsyncConnection[Any], shadow: str, live: str) -> None:
    """Empty copies of the projection tables (and a checkpoint table) in schema *shadow*."""
    async with conn.transaction():
        # A rebuild that died leaves its schema behind; the lock says none is running now.
        await conn.execute(
            sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(shadow))
        )
        await conn.execute(sql.SQL("create schema {}").format(sql.Identifier(shadow)))
        for table in (*PROJECTION_TABLES, _CHECKPOINTS):
            await conn.execute(
                sql.SQL("create table {} (like {} including all)").format(
                    sql.Identifier(shadow, table), sql.Identifier(live, table)
                )
            )


async def _swap(conn: psycopg.AsyncConnection[Any], name: str, shadow: str, live: str) -> None:
    async with conn.transaction():
        checkpoints = sql.Identifier(live, _CHECKPOINTS)
        await conn.execute(
            sql.SQL(_QUERIES["ensure_checkpoint"]).format(checkpoints=checkpoints),
            {"name": name},
        )
        # Waits for a live batch in progress; the next one waits for this commit.
        await conn.execute(
            sql.SQL(_QUERIES["lock_checkpoint"]).format(checkpoints=checkpoints),
            {"name": name},
        )
        for table, keys in PROJECTION_TABLES.items():
            columns = await _columns(conn, live, table)
            for query in ("delete_missing", "copy_rows"):
                await conn.execute(
                    _compose(
                        query,
                        sql.Identifier(live, table),
                        sql.Identifier(shadow, table),
                        keys,
                        columns,
                    )
                )
        await conn.execute(
            sql.SQL(_QUERIES["copy_checkpoint"]).format(
                checkpoints=checkpoints, replayed=sql.Identifier(shadow, _CHECKPOINTS)
            ),
            {"name": name},
        )


async def _columns(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> list[str]:
    cursor = await conn.execute(_QUERIES["columns"], {"schema": schema, "table": table})
    return [column for (column,) in await cursor.fetchall()]


def _compose(
    query: str,
    live: sql.Identifier,
    replayed: sql.Identifier,
    keys: tuple[str, ...],
    columns: list[str],
) -> sql.Composed:
    def names(prefix: str, items: list[str] | tuple[str, ...]) -> sql.Composable:
        if not prefix:
            return sql.SQL(", ").join(sql.Identifier(item) for item in items)
        return sql.SQL(", ").join(sql.Identifier(prefix, item) for item in items)

    return sql.SQL(_QUERIES[query]).format(
        live=live,
        replayed=replayed,
        keys=names("", keys),
        live_keys=names("t", keys),
        replayed_keys=names("r", keys),
        columns=names("", columns),
        excluded_columns=names("excluded", columns),
    )
