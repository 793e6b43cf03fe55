"""The named-query loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.sqlfile import load_queries


def test_named_blocks_are_loaded_by_name(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text("-- name: one\nselect 1;\n\n-- name: two\n-- a comment\nselect 2;\n")
    assert load_queries(path) == {"one": "select 1;", "two": "-- a comment\nselect 2;"}


def test_a_name_used_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text("-- name: one\nselect 1;\n-- name: one\nselect 2;\n")
    with pytest.raises(ValueError, match="defined twice"):
        load_queries(path)
