"""Readers wake quickly after a commit, and still catch up when a notification is lost."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from ledger import Channel, Listener, Notifier, append
from tests.support.factories import metadata, submitted

pytestmark = pytest.mark.anyio


async def test_listener_wakes_within_100ms_of_a_commit(db_url: str) -> None:
    async with (
        Listener(db_url) as listener,
        Notifier(db_url) as notifier,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        await listener.wait(0.5)  # the wake-up every (re)connect gives
        await append(conn, uuid.uuid4(), 0, [submitted()], metadata())
        committed = time.monotonic()
        notifier.poke()
        assert await listener.wait(timeout=2.0), "no wake-up at all"
        assert time.monotonic() - committed < 0.1


async def test_listener_reconnects_after_its_connection_is_killed(db_url: str) -> None:
    async with (
        Listener(db_url, reconnect_delay=0.05) as listener,
        Notifier(db_url) as notifier,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin,
    ):
        await listener.wait(0.5)
        assert listener.connection is not None
        backend = listener.connection.info.backend_pid
        await admin.execute("select pg_terminate_backend(%s)", (backend,))
        # The reconnect itself wakes the reader, so nothing committed meanwhile is missed.
        assert await listener.wait(timeout=5.0)
        assert listener.connection is not None
        assert listener.connection.info.backend_pid != backend
        notifier.poke()
        assert await listener.wait(timeout=2.0)


async def test_pokes_in_a_burst_are_coalesced(db_url: str) -> None:
    async with (
        Notifier(db_url, interval=0.05) as notifier,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        await conn.execute("listen qgjob_events")
        for _ in range(100):
            notifier.poke()
        received = 0
        async for _ in conn.notifies(timeout=0.5):
            received += 1
        assert 1 <= received <= 3


async def test_a_listener_is_woken_only_by_its_own_channels(db_url: str) -> None:
    heard: list[tuple[Channel, str | None]] = []
    async with (
        Listener(
            db_url,
            channels=(Channel.PROJECTIONS, Channel.QUEUE),
            on_notification=lambda channel, payload: heard.append((channel, payload)),
        ) as readers,
        Notifier(db_url, channels=(Channel.EVENTS,)) as appender,
        Notifier(db_url, channels=(Channel.EVENTS, Channel.PROJECTIONS)) as projector,
    ):
        await readers.wait(0.5)  # the wake-up every (re)connect gives
        assert heard == [(Channel.PROJECTIONS, None), (Channel.QUEUE, None)]
        heard.clear()
        appender.poke()
        assert not await readers.wait(timeout=0.3), "woken by a channel it does not hear"
        projector.poke()
        assert await readers.wait(timeout=2.0)
        assert heard == [(Channel.PROJECTIONS, "")]


async def test_a_poke_just_before_the_notifier_closes_is_sent_once(db_url: str) -> None:
    heard: list[str | None] = []
    async with Listener(
        db_url, on_notification=lambda channel, payload: heard.append(payload)
    ) as listener:
        await listener.wait(0.5)  # the wake-up every (re)connect gives
        heard.clear()
        async with Notifier(db_url) as notifier:
            notifier.poke()
        assert await listener.wait(timeout=2.0), "the poke was lost as the notifier closed"
        assert not await listener.wait(timeout=0.3), "the poke went out twice"
    assert heard == [""]
