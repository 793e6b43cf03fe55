"""API tokens: making, listing and revoking them (``qgjobd token create|list|revoke``).

A token is ``qgj_`` and 43 random URL-safe characters; the database keeps only its
SHA-256 digest, so a token is shown once, when it is made. A token acts for one
organisation, within its scopes. Revoking one notifies every API process, which then
forgets the tokens it had verified (auth.py), so a revoked token stops working at once.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
import uuid
from collections.abc import Collection
from pathlib import Path
from uuid import UUID

import attrs
import psycopg

from ledger.events import JobSubmitted
from ledger.sqlfile import load_queries
from ledger.wakeup import Channel

__all__ = ["Scope", "TokenRecord", "create_token", "list_tokens", "revoke_token", "token_digest"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
_PREFIX = "qgj_"


class Scope(enum.StrEnum):
    """What a token may do."""

    #: Submit, read, wait for and cancel its organisation's jobs.
    JOBS = "jobs"
    #: Scrape /metrics, which then shows its organisation's figures and the fleet's.
    METRICS = "metrics"


@attrs.frozen(kw_only=True)
class TokenRecord:
    """What the database knows of a token: everything but the token itself."""

    token_id: UUID
    org_id: str
    scopes: tuple[Scope, ...]
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_token(
    url: str,
    org_id: str,
    label: str | None = None,
    scopes: Collection[Scope] = (Scope.JOBS,),
) -> str:
    """Make a new token for *org_id*, store its digest, and return the token itself.

    Raises ValueError when *org_id* is not a valid organisation name or *scopes* is empty.
    """
    org_field = attrs.fields(JobSubmitted).org_id
    assert org_field.validator is not None
    org_field.validator(None, org_field, org_id)
    if not scopes:
        raise ValueError("a token needs at least one scope")
    token = _PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            _QUERIES["create_token"],
            {
                "token_id": uuid.uuid4(),
                "org_id": org_id,
                "token_hash": token_digest(token),
                "label": label,
                "scopes": sorted({Scope(scope).value for scope in scopes}),
            },
        )
    return token


def list_tokens(url: str, org_id: str | None = None) -> list[TokenRecord]:
    """Every token of *org_id* (of every organisation when None), revoked ones included."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_QUERIES["list_tokens"], {"org_id": org_id}).fetchall()
    return [
        TokenRecord(
            token_id=token_id,
            org_id=org,
            scopes=tuple(Scope(scope) for scope in scopes),
            label=label,
            created_at=created_at,
            revoked_at=revoked_at,
        )
        for token_id, org, scopes, label, created_at, revoked_at in rows
    ]


def revoke_token(url: str, token_id: UUID) -> dt.datetime | None:
    """Revoke the token *token_id* on every API process; return when it was revoked
    (earlier, if it already was), or None when there is no such token."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            _QUERIES["revoke_token"], {"token_id": token_id, "channel": Channel.TOKENS.value}
        ).fetchone()
    if row is None:
        return None
    revoked_at: dt.datetime = row[1]
    return revoked_at
