"""Load named SQL blocks from a .sql file, once.

A block starts with a line ``-- name: <block_name>`` and runs to the next such
line. Keeping SQL in .sql files lets it be read, diffed and run in psql as is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString, cast

__all__ = ["load_queries"]

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, LiteralString]:
    """Return ``{name: sql}`` for every named block in the file at *path*."""
    text = path.read_text()
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{path}: query {name!r} is defined twice")
        # The file is part of the package, not user input: its text is as literal as a constant.
        queries[name] = cast(LiteralString, body.strip())
    return queries
