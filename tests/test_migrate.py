"""Migrations: applied once, in order, under a lock; edits to applied files are refused."""

from __future__ import annotations

import re
import shutil
import threading
from importlib.resources import as_file
from pathlib import Path

import psycopg
import pytest

from ledger import MigrationError
from ledger.migrate import MIGRATIONS_DIR, apply_migrations, discover_migrations


def _applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select name from schema_migrations order by version")]


def _copy_of_migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    with as_file(MIGRATIONS_DIR) as shipped:
        shutil.copytree(shipped, directory)
    return directory


def test_applying_twice_is_a_no_op(empty_db_url: str) -> None:
    first = apply_migrations(empty_db_url)
    assert first == [m.name for m in discover_migrations()]
    assert apply_migrations(empty_db_url) == []
    assert _applied(empty_db_url) == first


def test_two_migrators_racing_end_with_one_applied_set(empty_db_url: str) -> None:
    results: list[list[str] | BaseException] = []

    def migrate() -> None:
        try:
            results.append(apply_migrations(empty_db_url))
        except BaseException as error:  # reported below
            results.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, BaseException)]
    names = [m.name for m in discover_migrations()]
    assert sorted(results, key=len) == [[], [], [], names]
    assert _applied(empty_db_url) == names


def test_an_edited_applied_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy_of_migrations(tmp_path)
    apply_migrations(empty_db_url, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a later edit\n")
    with pytest.raises(MigrationError, match=f"{first.name} was edited after it was applied"):
        apply_migrations(empty_db_url, directory)


def test_a_failing_migration_leaves_nothing_half_applied(
    empty_db_url: str, tmp_path: Path
) -> None:
    directory = _copy_of_migrations(tmp_path)
    (directory / "900_broken.sql").write_text(
        "-- broken on purpose\ncreate table half_done (id int);\nselect no_such_function();\n"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        apply_migrations(empty_db_url, directory)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select to_regclass('half_done')").fetchone() == (None,)
    assert "900_broken.sql" not in _applied(empty_db_url)


def test_every_migration_opens_with_a_comment() -> None:
    for migration in discover_migrations():
        assert migration.sql.startswith("-- "), migration.name


def test_migrated_schema_has_what_the_code_expects(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns "
                "where table_name = 'events' order by ordinal_position"
            )
        ]
    assert columns == [
        "position", "stream_id", "version", "type", "data", "metadata", "recorded_at", "txid",
    ]


def test_every_function_in_the_database_has_one_definition_a_reader_can_find(
    db_url: str,
) -> None:
    """Applied migrations are history: a function that changes gets a new versioned name
    (and the old one is dropped), so each live function is created by exactly one
    migration, which is its current body."""
    with psycopg.connect(db_url) as conn:
        live = {
            row[0]
            for row in conn.execute(
                "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                "where n.nspname = current_schema()"
            )
        }
    created: dict[str, list[str]] = {name: [] for name in live}
    for migration in discover_migrations():
        for name in re.findall(r"create (?:or replace )?function (\w+)", migration.sql):
            if name in created:
                created[name].append(migration.name)
    assert live
    assert {name: files for name, files in created.items() if len(files) != 1} == {}
