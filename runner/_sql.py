"""The runner's SQL, loaded once from queries.sql."""

from __future__ import annotations

from pathlib import Path

from ledger.sqlfile import load_queries

__all__ = ["QUERIES"]

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
