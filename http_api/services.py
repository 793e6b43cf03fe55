"""What every endpoint needs, built once per app and opened by its lifespan."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from http_api.auth import Authenticator
from http_api.blob_collector import BlobCollector
from http_api.changes import ReadModelChanges
from http_api.metrics import Metrics
from ledger.blobs import (
    BlobKind,
    BlobStore,
    PostgresBlobStore,
    limits_from_environment,
    retention_from_environment,
)
from ledger.grouping import resolve
from ledger.wakeup import Channel, Listener, Notifier

__all__ = ["Services", "Settings", "services"]

_log = logging.getLogger("http_api")


@attrs.frozen(kw_only=True)
class Settings:
    #: Serve without tokens; the request names the organisation. For a loopback server.
    local_mode: bool
    #: The longest ``?wait=`` a request may ask for, in seconds.
    max_wait_s: float = 60.0
    #: /readyz fails when a projector is further behind than this, in seconds.
    ready_max_lag_s: float = 30.0
    #: Connections the API may hold open to PostgreSQL.
    pool_size: int = 10
    #: How long a request waits for a database connection before answering 503.
    pool_timeout_s: float = 5.0
    #: The grouping strategy jobs are grouped by as they are submitted; None means
    #: $QGJOB_GROUPING or ``app_version`` (see ledger/grouping.py).
    grouping: str | None = None
    #: The largest blob of each kind an upload may store, in bytes; by default
    #: $QGJOB_MAX_BUILD_BYTES and $QGJOB_MAX_BUNDLE_BYTES, else 2 GiB and 200 MiB.
    blob_limits: dict[BlobKind, int] = attrs.field(factory=limits_from_environment)
    #: How long a blob no job names is kept; by default $QGJOB_BLOB_RETENTION_DAYS, else 7.
    blob_retention: dt.timedelta = attrs.field(factory=retention_from_environment)
    #: How often unreferenced blobs past their retention are removed, in seconds.
    blob_collect_interval_s: float = 3600.0


class Services:
    """The connection pool, auth, blob store, change feed, notifier, grouping and metrics of
    one app.

    Raises UnknownStrategy for a grouping strategy that does not exist.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.grouping = resolve(settings.grouping)
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=settings.pool_size,
            open=False,
            timeout=settings.pool_timeout_s,
            kwargs={"autocommit": True},
            name="qgjob-api",
        )
        self.blobs: BlobStore = PostgresBlobStore(self.pool)
        self.blob_collector = BlobCollector(
            self.pool, settings.blob_retention, interval_s=settings.blob_collect_interval_s
        )
        self.auth = Authenticator(self.pool, local_mode=settings.local_mode)
        self.listener = Listener(url, channels=(Channel.PROJECTIONS,))
        self.changes = ReadModelChanges(self.pool, self.listener)
        self.notifier = Notifier(url, channels=(Channel.EVENTS,))
        self.metrics = Metrics()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        if self.settings.local_mode:
            _log.warning(
                "local mode: serving without API tokens; every caller may act for any "
                "organisation. Bind to a loopback address only."
            )
        # Not waiting for a first connection: an API whose database is down still starts,
        # answers /healthz, and reports 503 on /readyz until the database is back.
        await self.pool.open(wait=False)
        try:
            async with (
                self.listener,
                self.changes.running(),
                self.notifier,
                self.blob_collector.running(),
            ):
                yield
        finally:
            await self.pool.close()


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
