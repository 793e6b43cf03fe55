"""BrowserStack uploads: one per organisation and build, reused until it expires.

An upload is keyed by the organisation and the build's digest (the job named an
uploaded build) or, failing that, the app version. The agent remembers the uploads it
knows; other agents' are read from their BuildUploaded events. Slots of one agent take
turns per key on an asyncio lock, agents on different hosts on an advisory lock, so that
the first uploads and the others reuse its ``bs://`` id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import attrs
import psycopg

from ledger.events import BuildUploaded
from runner._sql import QUERIES

__all__ = ["Upload", "UploadKey", "Uploads"]


@attrs.frozen(kw_only=True)
class UploadKey:
    """Whose build, and which: an upload is never reused for another organisation."""

    org_id: str
    app_version_id: str
    #: The build's ``sha256:<hex>`` when the job named an uploaded build.
    build: str | None

    @property
    def lock_name(self) -> str:
        which = self.build or f"app_version={self.app_version_id}"
        return f"browserstack-upload|{self.org_id}|{which}"


@attrs.frozen(kw_only=True)
class Upload:
    reference: str
    expires_at: dt.datetime | None

    def live(self, now: dt.datetime) -> bool:
        return self.expires_at is None or self.expires_at > now

    def event(self, key: UploadKey) -> BuildUploaded:
        return BuildUploaded(
            app_version_id=key.app_version_id,
            reference=self.reference,
            build=key.build,
            expires_at=self.expires_at,
        )


class Uploads:
    """The uploads an agent knows of, and the turns its slots take to make them."""

    def __init__(self) -> None:
        self._known: dict[UploadKey, Upload] = {}
        self._turns: defaultdict[UploadKey, asyncio.Lock] = defaultdict(asyncio.Lock)

    @contextlib.asynccontextmanager
    async def turn(
        self, conn: psycopg.AsyncConnection[Any], key: UploadKey, now: dt.datetime
    ) -> AsyncIterator[Upload | None]:
        """Hold *key* against this agent's other slots and other agents; yields the live
        upload of it, if there is one. An upload made meanwhile is to be remember()ed."""
        async with self._turns[key]:
            known = self._known.get(key)
            if known is not None and known.live(now):
                yield known
                return
            params = {"key": key.lock_name}
            await conn.execute(QUERIES["lock_upload"], params)
            try:
                recorded = await _recorded(conn, key)
                if recorded is not None and recorded.live(now):
                    self._known[key] = recorded
                    yield recorded
                else:
                    yield None
            finally:
                await conn.execute(QUERIES["unlock_upload"], params)

    def remember(self, key: UploadKey, upload: Upload) -> None:
        self._known[key] = upload


async def _recorded(conn: psycopg.AsyncConnection[Any], key: UploadKey) -> Upload | None:
    """The organisation's last recorded upload of the build."""
    params = {"org_id": key.org_id, "app_version_id": key.app_version_id, "build": key.build}
    row = await (await conn.execute(QUERIES["uploaded_build"], params)).fetchone()
    return None if row is None else Upload(reference=row[0], expires_at=row[1])
