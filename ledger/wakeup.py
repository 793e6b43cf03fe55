"""Waking readers when events land, without slowing down the writers.

A transaction that NOTIFYs holds a database-wide lock from the NOTIFY through
its commit, WAL flush included, so notifying inside appending transactions makes
every appending commit wait for the previous one (measured with pgbench, 8
clients: 11,200 inserts/s fell to 4,500). So writers notify *after* commit, as
a statement of its own on a separate connection, coalesced per process: the
first poke after a quiet spell goes out at once, then at most one per
``interval`` while pokes keep coming. A lost notification only delays a reader
until its poll timer fires; readers always read until they find nothing new.

The exceptions are the statements that make a job claimable (migrations/040_open_jobs.sql):
a submit, which commits without waiting for its flush and so holds the lock only while
its commit record goes into memory, and a retry or hand-back, which are few. They
notify device agents inside their transaction, with the target as the payload.

Notifications go on channels by who needs them, so that no process is woken by
commits it has nothing to do with: every process would otherwise wake several times
per job (for the submit, the claim, the result and each projector batch), and on a
small machine those wake-ups cost the very CPU that starting jobs quickly needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

__all__ = ["Channel", "Listener", "Notifier"]

_log = logging.getLogger(__name__)


class Channel(enum.StrEnum):
    """What a notification says, and so who listens for it."""

    #: Events were appended: for readers of the whole ledger (the projector).
    EVENTS = "qgjob_events"
    #: The projections moved on: for the API's waiters.
    PROJECTIONS = "qgjob_projections"
    #: A job became claimable for the target the payload names (a submit, a retry, a
    #: hand-back): for device agents.
    QUEUE = "qgjob_queue"
    #: An API token was revoked: for API processes, which forget the tokens they trust.
    TOKENS = "qgjob_tokens"


class Notifier:
    """Coalesces "new events committed" pokes into few NOTIFYs on its *channels*: each
    NOTIFY goes to the channels poked since the last one."""

    def __init__(
        self,
        url: str,
        *,
        channels: Sequence[Channel] = (Channel.EVENTS,),
        interval: float = 0.005,
        delay: float = 0.0,
    ) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._interval = interval
        #: How long the first poke waits, gathering those that follow, before it goes out.
        self._delay = delay
        self._wanted = asyncio.Event()
        #: The channels poked since the last NOTIFY.
        self._poked: set[Channel] = set()
        self._task: asyncio.Task[None] | None = None
        #: The NOTIFY under way, if any.
        self._sending: asyncio.Future[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def poke(self, *channels: Channel) -> None:
        """Say that events were committed, to *channels* (by default all the notifier's
        channels); returns at once."""
        self._poked.update(channels or self._channels)
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send_loop(), name="qgjob-notifier")

    async def aclose(self) -> None:
        """Send what was poked and not sent yet, and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sending is not None:
            await self._sending
        if self._poked:
            await self._notify(self._poked)
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send_loop(self) -> None:
        while True:
            await self._wanted.wait()
            if self._delay:
                await asyncio.sleep(self._delay)
            self._wanted.clear()
            channels, self._poked = self._poked, set()
            # Shielded: aclose() lets a NOTIFY under way finish rather than cut it short.
            self._sending = asyncio.ensure_future(self._notify(channels))
            await asyncio.shield(self._sending)
            await asyncio.sleep(self._interval)

    async def _notify(self, channels: set[Channel]) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            await self._conn.execute(
                "select pg_notify(channel, '') from unnest(%s::text[]) as channel",
                ([channel.value for channel in sorted(channels)],),
            )
        except psycopg.Error as error:
            # Readers poll anyway; a missed wake-up costs latency, never events.
            _log.warning("could not notify readers: %s", error)
            self._conn = None


class Listener:
    """Waits for notifications on *channels*, on a dedicated autocommit connection.

    ``await listener.wait(timeout)`` returns True when notified and False when the
    timeout passed first. The connection is re-opened by itself after a failure.
    *on_notification*, if given, is called with each notification's channel and payload
    as it arrives, and with each channel and None after a (re)connect: anything may
    have been committed while the listener was deaf.
    """

    def __init__(
        self,
        url: str,
        *,
        channels: Sequence[Channel] = (Channel.EVENTS,),
        reconnect_delay: float = 1.0,
        keepalive: float = 30.0,
        on_notification: Callable[[Channel, str | None], None] | None = None,
    ) -> None:
        self._url = url
        self._channels = channels
        self._on_notification = on_notification
        self._reconnect_delay = reconnect_delay
        self._keepalive = keepalive
        self._notified = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        #: The live connection, exposed so tests can kill it.
        self.connection: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._listen_loop(), name="qgjob-listener")
        # The first LISTEN is awaited, so a commit right after entering is not missed; if the
        # database is unreachable now, the loop keeps trying and callers poll meanwhile.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 5)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _heard_on(self, channel: Channel, payload: str | None) -> None:
        if self._on_notification is not None:
            self._on_notification(channel, payload)
        self._notified.set()

    def clear(self) -> None:
        """Forget the notifications received so far: the caller is about to read past
        everything they announced."""
        self._notified.clear()

    async def wait(self, timeout: float, *, stop: asyncio.Event | None = None) -> bool:
        """Wait for a notification; False when *timeout* passed or *stop* was set first."""
        waits = [asyncio.ensure_future(self._notified.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self._notified.is_set():
            return False
        self._notified.clear()
        return True

    async def _listen_loop(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    self.connection = conn
                    for channel in self._channels:
                        await conn.execute(
                            sql.SQL("listen {}").format(sql.Identifier(channel.value))
                        )
                    self._listening.set()
                    # Wake once on (re)connect: anything committed while deaf is read now.
                    for channel in self._channels:
                        self._heard_on(channel, None)
                    while True:
                        async for notify in conn.notifies(timeout=self._keepalive):
                            self._heard_on(Channel(notify.channel), notify.payload)
                        # A quiet spell: make sure the connection is still alive.
                        await conn.execute("select 1")
            except psycopg.Error as error:
                _log.warning("listen connection lost (%s); reconnecting", error)
            self.connection = None
            await asyncio.sleep(self._reconnect_delay)
