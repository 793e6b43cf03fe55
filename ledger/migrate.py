"""Bring a database's schema up to date from the numbered files in migrations/.

migrations/ is a package whose .sql files are package data, found through
importlib.resources: a checkout and an installed wheel read the same files.

Files are named ``NNN_what.sql`` and applied in number order, each in its own
transaction, all under one advisory lock so that migrators started together
apply every file exactly once. Each applied file is recorded with a checksum;
a file edited after it was applied is refused rather than silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import attrs
import psycopg

from ledger.errors import MigrationError
from ledger.sqlfile import load_queries

__all__ = ["MIGRATIONS_DIR", "Migration", "apply_migrations", "discover_migrations"]

MIGRATIONS_DIR = files("migrations")
_QUERIES = load_queries(Path(__file__).with_name("migrate.sql"))
_FILE_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
# Any fixed number works; it only has to differ from the other advisory locks qgjob takes.
_MIGRATION_LOCK = 7_117_001


@attrs.frozen(kw_only=True)
class Migration:
    #: The number the file name starts with; files apply in this order.
    version: int
    #: The file name, e.g. ``001_events.sql``.
    name: str
    #: The SQL to run.
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    sql_files = (entry for entry in directory.iterdir() if entry.name.endswith(".sql"))
    for entry in sorted(sql_files, key=lambda entry: entry.name):
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named NNN_what.sql")
        migrations.append(
            Migration(version=int(match[1]), name=entry.name, sql=entry.read_text())
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files in {directory} share a number")
    return migrations


def apply_migrations(url: str, directory: Traversable = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the names of the files applied (empty when up to date)."""
    migrations = discover_migrations(directory)
    applied_now = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_QUERIES["lock"], {"key": _MIGRATION_LOCK})
        try:
            conn.execute(_QUERIES["create_table"])
            applied = {
                version: (name, checksum)
                for version, name, checksum in conn.execute(_QUERIES["applied"]).fetchall()
            }
            _refuse_drift(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        _QUERIES["record"],
                        {
                            "version": migration.version,
                            "name": migration.name,
                            "checksum": migration.checksum,
                        },
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute(_QUERIES["unlock"], {"key": _MIGRATION_LOCK})
    return applied_now


def _refuse_drift(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = on_disk.get(version)
        if migration is None:
            raise MigrationError(f"{name} was applied to this database but is missing on disk")
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.name} was edited after it was applied; "
                "add a new migration instead of changing an applied one"
            )
