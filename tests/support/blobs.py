"""Helpers for blob tests: the blob tables' contents, and archives built entry by entry."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import psycopg

#: One entry of an archive to build: (name, type, content or link target).
Entry = tuple[str, bytes, bytes | str]


def blob_state(url: str) -> list[tuple[Any, ...]]:
    """Every blob row and its chunks' count and total size: equal before and after =
    untouched."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select b.org_id, b.sha256, b.kind, b.size, b.name, b.referenced_at,"
            " count(c.seq), coalesce(sum(length(c.data)), 0)"
            " from blobs b left join blob_chunks c using (blob_id)"
            " group by b.blob_id order by b.blob_id"
        ).fetchall()


def chunk_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from blob_chunks").fetchone()
    assert row is not None
    return int(row[0])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(entries: list[Entry], *, format: int = tarfile.PAX_FORMAT) -> bytes:
    """A gzip-compressed tar archive of *entries*, written as given (no path checks)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=format) as archive:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                assert isinstance(payload, str)
                info.linkname = payload
                archive.addfile(info)
            elif kind == tarfile.DIRTYPE:
                info.mode = 0o755
                archive.addfile(info)
            else:
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def project_bundle() -> bytes:
    """A small, safe AppWright project archive."""
    return tar_gz(
        [
            ("appwright.config.ts", tarfile.REGTYPE, b"export default {};\n"),
            ("package.json", tarfile.REGTYPE, b'{"name": "p", "version": "1.0.0"}\n'),
            ("tests", tarfile.DIRTYPE, b""),
            ("tests/a.spec.js", tarfile.REGTYPE, b"// a\n"),
            ("tests/latest.spec.js", tarfile.SYMTYPE, "a.spec.js"),
        ]
    )
