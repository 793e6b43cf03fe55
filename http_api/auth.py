"""Who is calling: per-organisation API tokens, or local mode without tokens.

With tokens, every read and write is scoped to the token's organisation, and a token
may do only what its scopes allow (tokens.py). In local mode (a server on the loopback
interface for one user) no token is needed and the organisation comes from the request.

A verified token is trusted for a while without asking the database again. Revoking a
token notifies every API process (Channel.TOKENS), and forget() then drops them all; so
does a reconnect of the listener, which may have missed a notification meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from http_api.errors import ApiError
from http_api.inputs import query_name
from http_api.tokens import Scope, token_digest
from ledger.sqlfile import load_queries

__all__ = ["Authenticator", "Caller"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
#: How long a verified token is trusted without asking the database again, should a
#: revocation's notification never arrive.
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
        return self._scoped(query_name(request, "org"), field="org")

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


@attrs.frozen(kw_only=True)
class _Verified:
    caller: Caller
    scopes: frozenset[Scope]
    until: float


class Authenticator:
    """Turns a request's ``Authorization: Bearer`` header into a Caller."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, local_mode: bool) -> None:
        self._pool = pool
        self.local_mode = local_mode
        self._verified: dict[bytes, _Verified] = {}

    def forget(self) -> None:
        """Drop every verified token: the next request of each asks the database again."""
        self._verified.clear()

    async def caller(self, request: Request, scope: Scope = Scope.JOBS) -> Caller:
        """The request's caller, whose token must allow *scope*."""
        if self.local_mode:
            return Caller(org_id=None, actor="api:local")
        verified = await self._verify(request)
        if scope not in verified.scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this token may not do this: it needs the {scope.value!r} scope "
                "(qgjobd token create --scope ...)",
            )
        return verified.caller

    async def _verify(self, request: Request) -> _Verified:
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
        if cached is not None and cached.until > time.monotonic():
            return cached
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_QUERIES["token_org"], {"token_hash": digest})
            row = await cursor.fetchone()
        if row is None:
            self._verified.pop(digest, None)
            raise ApiError(401, "unauthorized", "the API token is not valid", headers=_CHALLENGE)
        token_id, org_id, scopes = row
        verified = _Verified(
            caller=Caller(org_id=org_id, actor=f"api:token:{token_id}"),
            scopes=frozenset(Scope(scope) for scope in scopes),
            until=time.monotonic() + _CACHE_S,
        )
        self._verified[digest] = verified
        return verified
