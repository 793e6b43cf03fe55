"""A throwaway, migrated database for a benchmark run."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from ledger.embedded import database_url
from ledger.migrate import apply_migrations


@contextlib.contextmanager
def bench_database(data_dir: Path = Path(".qgjob")) -> Iterator[str]:
    """Create a fresh database on QGJOB_DATABASE_URL or the embedded cluster; drop it after."""
    server = database_url(data_dir / "pg")
    name = f"qgjob_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    try:
        apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
