"""Who is calling: per-organisation API tokens, or local mode without tokens.

A token is ``qgj_`` and 43 random URL-safe characters; the database keeps only its
SHA-256 digest. With tokens, every read and write is scoped to the token's organisation.
In local mode (a server on the loopback interface for one user) no token is needed and the
organisation comes from the request itself.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from http_api.errors import ApiError
from http_api.inputs import query_text
from ledger.events import JobSubmitted
from ledger.sqlfile import load_queries

__all__ = ["Authenticator", "Caller", "create_token", "token_digest"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_PREFIX = "qgj_"
#: How long a verified token is trusted without asking the database again.
_CACHE_S = 30.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="qgjob"'}


@attrs.frozen(kw_only=True)
class Caller:
    """The identity a request acts as."""

    #: The token's organisation; None in local mode, where the request names the org.
    org_id: str | None
    #: Recorded as the actor of the events the request appends.
    actor: str

    def org_for_write(self, requested: str | None) -> str | None:
        """The organisation a write acts for: the token's, which the body may only repeat."""
        return self._scoped(requested, field="org_id")

    def org_for_read(self, request: Request) -> str | None:
        """The organisation a read is limited to; None (every org) only in local mode."""
        return self._scoped(query_text(request, "org"), field="org")

    def _scoped(self, requested: str | None, *, field: str) -> str | None:
        if self.org_id is None:
            return requested
        if requested is not None and requested != self.org_id:
            raise ApiError(
                403,
                "wrong_org",
                f"this token belongs to organisation {self.org_id!r}, not {requested!r}",
                field=field,
            )
        return self.org_id


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Turns a request's ``Authorization: Bearer`` header into a Caller."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, local_mode: bool) -> None:
        self._pool = pool
        self.local_mode = local_mode
        self._verified: dict[bytes, tuple[Caller, float]] = {}

    async def caller(self, request: Request) -> Caller:
        if self.local_mode:
            return Caller(org_id=None, actor="api:local")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "an API token is required: send 'Authorization: Bearer <token>' "
                "(qgjobd token create --org ORG makes one)",
                headers=_CHALLENGE,
            )
        digest = token_digest(token.strip())
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_QUERIES["token_org"], {"token_hash": digest})
            row = await cursor.fetchone()
        if row is None:
            self._verified.pop(digest, None)
            raise ApiError(401, "unauthorized", "the API token is not valid", headers=_CHALLENGE)
        token_id, org_id = row
        caller = Caller(org_id=org_id, actor=f"api:token:{token_id}")
        self._verified[digest] = (caller, time.monotonic() + _CACHE_S)
        return caller


def create_token(url: str, org_id: str, label: str | None = None) -> str:
    """Make a new token for *org_id*, store its digest, and return the token itself.

    Raises ValueError when *org_id* is not a valid organisation name.
    """
    org_field = attrs.fields(JobSubmitted).org_id
    assert org_field.validator is not None
    org_field.validator(None, org_field, org_id)
    token = _PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            _QUERIES["create_token"],
            {
                "token_id": uuid.uuid4(),
                "org_id": org_id,
                "token_hash": token_digest(token),
                "label": label,
            },
        )
    return token
