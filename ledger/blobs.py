"""The blob store: test bundles and app builds, named by SHA-256 and owned by an organisation.

Blobs live in ``ledger/`` because they are write-model data of the same standing as
events: immutable once written, written only through this module, and named by jobs'
JobSubmitted events (``bundle``, ``build`` as ``sha256:<hex>``). The API stores and serves
them; device hosts read them. Nothing here knows about HTTP.

``BlobStore`` is the small interface the rest of qgjob uses; ``PostgresBlobStore`` keeps
content in PostgreSQL (migrations/070_blobs.sql) in chunks of ``CHUNK_BYTES``, so there is
nothing else to run, and an S3-compatible store can be added behind the same interface
later, chosen by URL. Content streams through in chunks both ways: an upload is hashed as
it is written and only committed once its digest and size are right; a download reads one
chunk at a time inside one snapshot, so a blob collected meanwhile is still served whole.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.errors import BlobNotFound, BlobTooLarge, DigestMismatch
from ledger.sqlfile import load_queries

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_LIMITS",
    "DEFAULT_RETENTION",
    "LIMIT_ENV",
    "RETENTION_ENV",
    "Blob",
    "BlobKind",
    "BlobStore",
    "PostgresBlobStore",
    "collect_garbage",
    "digest_of_reference",
    "is_digest",
    "limits_from_environment",
    "reference",
    "retention_from_environment",
]

_QUERIES = load_queries(Path(__file__).with_name("blobs.sql"))
CHUNK_BYTES = 1024 * 1024
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_REFERENCE_PREFIX = "sha256:"


class BlobKind(enum.StrEnum):
    #: An app binary: an APK, AAB, IPA or zipped .app.
    BUILD = "build"
    #: A test bundle: an AppWright project packed as a tar.gz.
    BUNDLE = "bundle"


DEFAULT_LIMITS: Mapping[BlobKind, int] = {
    BlobKind.BUILD: 2 * 1024**3,
    BlobKind.BUNDLE: 200 * 1024**2,
}
#: How long a blob no job names is kept; $QGJOB_BLOB_RETENTION_DAYS overrides it.
DEFAULT_RETENTION = dt.timedelta(days=7)
RETENTION_ENV = "QGJOB_BLOB_RETENTION_DAYS"
#: The environment variables that override the size limits, in bytes.
LIMIT_ENV: Mapping[BlobKind, str] = {
    BlobKind.BUILD: "QGJOB_MAX_BUILD_BYTES",
    BlobKind.BUNDLE: "QGJOB_MAX_BUNDLE_BYTES",
}


def limits_from_environment() -> dict[BlobKind, int]:
    """The size limit of each kind: $QGJOB_MAX_BUILD_BYTES and $QGJOB_MAX_BUNDLE_BYTES, or
    the defaults. Raises ValueError for a value that is not a positive whole number."""
    limits = dict(DEFAULT_LIMITS)
    for kind, name in LIMIT_ENV.items():
        text = os.environ.get(name)
        if text is None:
            continue
        if not text.isdigit() or int(text) == 0:
            raise ValueError(f"{name} must be a positive number of bytes, not {text!r}")
        limits[kind] = int(text)
    return limits


def retention_from_environment() -> dt.timedelta:
    """$QGJOB_BLOB_RETENTION_DAYS (a number of days, fractions allowed), or the default.
    Raises ValueError for a value that is not a number of days >= 0."""
    text = os.environ.get(RETENTION_ENV)
    if text is None:
        return DEFAULT_RETENTION
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 <= days < 100_000:
        raise ValueError(f"{RETENTION_ENV} must be a number of days, not {text!r}")
    return dt.timedelta(days=days)


def is_digest(text: str) -> bool:
    """Whether *text* is a SHA-256 digest in lowercase hex, as blobs are named."""
    return bool(_DIGEST.match(text))


def reference(sha256: str) -> str:
    """How a job names a blob: ``sha256:<hex>``."""
    return _REFERENCE_PREFIX + sha256


def digest_of_reference(text: str) -> str | None:
    """The digest a ``sha256:<hex>`` reference names; None when *text* is not one."""
    if not text.startswith(_REFERENCE_PREFIX):
        return None
    digest = text.removeprefix(_REFERENCE_PREFIX)
    return digest if is_digest(digest) else None


@attrs.frozen(kw_only=True)
class Blob:
    """What the store knows about one stored blob."""

    org_id: str
    #: The SHA-256 of the content, lowercase hex.
    sha256: str
    kind: BlobKind
    size: int
    #: The file name it was uploaded as.
    name: str
    created_at: dt.datetime


class BlobStore(Protocol):
    """Content-addressed storage, scoped by organisation: one organisation never sees,
    reads or removes another's blobs, even with the same content."""

    async def put(
        self,
        org_id: str,
        sha256: str,
        chunks: AsyncIterable[bytes],
        *,
        kind: BlobKind,
        name: str,
        max_size: int,
    ) -> tuple[Blob, bool]:
        """Store the content *chunks* yield as *sha256*; returns the blob and whether it
        is new. Content already stored is not read again.

        Raises BlobTooLarge past *max_size* bytes and DigestMismatch when the content's
        digest is not *sha256*; either way, nothing is kept. An exception *chunks* raises
        passes through, also keeping nothing.
        """
        ...

    async def has(self, org_id: str, sha256: str) -> Blob | None:
        """The blob, or None when this organisation has none with that digest."""
        ...

    def open(self, org_id: str, sha256: str) -> AsyncIterator[bytes]:
        """The content, chunk by chunk. Raises BlobNotFound on the first step when there
        is no such blob."""
        ...

    async def delete(self, org_id: str, sha256: str) -> bool:
        """Remove the blob; False when there was none."""
        ...

    async def mark_referenced(self, org_id: str, digests: Iterable[str]) -> set[str]:
        """Note that a job now names these blobs, restarting their retention; returns the
        digests of those this organisation has (the others are left as they are)."""
        ...


class PostgresBlobStore:
    """A BlobStore in PostgreSQL, in chunks of CHUNK_BYTES; the pool's connections must be
    in autocommit mode."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def put(
        self,
        org_id: str,
        sha256: str,
        chunks: AsyncIterable[bytes],
        *,
        kind: BlobKind,
        name: str,
        max_size: int,
    ) -> tuple[Blob, bool]:
        existing = await self.has(org_id, sha256)
        if existing is not None:
            return existing, False
        async with self._pool.connection() as conn, conn.transaction():
            key = {"org_id": org_id, "sha256": bytes.fromhex(sha256)}
            cursor = await conn.execute(
                _QUERIES["begin_blob"], {**key, "kind": kind.value, "name": name}
            )
            row = await cursor.fetchone()
            if row is None:
                # Another upload of the same content committed while this one waited.
                raced = await self._find(conn, org_id, sha256)
                assert raced is not None, "a blob row that blocked ours is committed"
                return raced, False
            (blob_id,) = row
            size = await _write_chunks(conn, blob_id, chunks, sha256=sha256, max_size=max_size)
            cursor = await conn.execute(_QUERIES["finish_blob"], {"blob_id": blob_id, "size": size})
            finished = await cursor.fetchone()
            assert finished is not None
            return _blob(org_id, sha256, finished), True

    async def has(self, org_id: str, sha256: str) -> Blob | None:
        async with self._pool.connection() as conn:
            return await self._find(conn, org_id, sha256)

    async def open(self, org_id: str, sha256: str) -> AsyncIterator[bytes]:
        async with (
            self._pool.connection() as conn,
            # One snapshot for the whole read: a blob removed meanwhile is still read whole.
            conn.transaction(),
        ):
            await conn.execute("set transaction isolation level repeatable read, read only")
            cursor = await conn.execute(
                _QUERIES["blob_id"], {"org_id": org_id, "sha256": bytes.fromhex(sha256)}
            )
            row = await cursor.fetchone()
            if row is None:
                raise BlobNotFound(f"organisation {org_id!r} has no blob {sha256}")
            (blob_id,) = row
            seq = 0
            while True:
                cursor = await conn.execute(
                    _QUERIES["chunk"], {"blob_id": blob_id, "seq": seq}, binary=True
                )
                chunk = await cursor.fetchone()
                if chunk is None:
                    return
                yield chunk[0]
                seq += 1

    async def delete(self, org_id: str, sha256: str) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _QUERIES["delete"], {"org_id": org_id, "sha256": bytes.fromhex(sha256)}
            )
            deleted: bool = cursor.rowcount > 0
            return deleted

    async def mark_referenced(self, org_id: str, digests: Iterable[str]) -> set[str]:
        wanted = [bytes.fromhex(digest) for digest in digests]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _QUERIES["touch_many"], {"org_id": org_id, "digests": wanted}
            )
            return {bytes(row[0]).hex() for row in await cursor.fetchall()}

    async def _find(
        self, conn: psycopg.AsyncConnection[Any], org_id: str, sha256: str
    ) -> Blob | None:
        cursor = await conn.execute(
            _QUERIES["find"], {"org_id": org_id, "sha256": bytes.fromhex(sha256)}
        )
        row = await cursor.fetchone()
        return None if row is None else _blob(org_id, sha256, row)


async def _write_chunks(
    conn: psycopg.AsyncConnection[Any],
    blob_id: int,
    chunks: AsyncIterable[bytes],
    *,
    sha256: str,
    max_size: int,
) -> int:
    """Write *chunks* as rows of CHUNK_BYTES, hashing and counting as they pass; returns
    the size. Raises BlobTooLarge or DigestMismatch (the caller's transaction then rolls
    back what was written)."""
    hasher = hashlib.sha256()
    size = 0
    seq = 0
    pending = bytearray()

    async def flush(data: bytes) -> None:
        nonlocal seq
        await conn.execute(_QUERIES["put_chunk"], {"blob_id": blob_id, "seq": seq, "data": data})
        seq += 1

    async for piece in chunks:
        size += len(piece)
        if size > max_size:
            raise BlobTooLarge(f"the blob is larger than the {max_size} bytes allowed")
        hasher.update(piece)
        pending += piece
        while len(pending) >= CHUNK_BYTES:
            await flush(bytes(pending[:CHUNK_BYTES]))
            del pending[:CHUNK_BYTES]
    if pending or seq == 0:
        await flush(bytes(pending))
    if hasher.hexdigest() != sha256:
        raise DigestMismatch(
            f"the content's SHA-256 is {hasher.hexdigest()}, not {sha256} as it was sent as"
        )
    return size


def _blob(org_id: str, sha256: str, row: tuple[Any, ...]) -> Blob:
    kind, size, name, created_at = row
    return Blob(
        org_id=org_id,
        sha256=sha256,
        kind=BlobKind(kind),
        size=size,
        name=name,
        created_at=created_at,
    )


async def collect_garbage(
    conn: psycopg.AsyncConnection[Any], retention: dt.timedelta
) -> list[tuple[str, str]]:
    """Remove blobs no unfinished job names whose retention has passed since they were
    stored or last named; returns the (org_id, sha256) of each one removed."""
    cursor = await conn.execute(_QUERIES["collect_garbage"], {"retention": retention})
    return [(org_id, digest) for org_id, digest in await cursor.fetchall()]
