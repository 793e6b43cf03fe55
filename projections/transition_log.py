"""One log line per job transition, for people watching ``qgjobd up``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from ledger import Checkpoint, Listener, RecordedEvent, head, read_after
from ledger.events import JOB_EVENTS, JobFailed, JobGrouped, JobSubmitted, JobTimedOut

__all__ = ["describe", "log_transitions"]

_log = logging.getLogger("qgjob.jobs")


def describe(recorded: RecordedEvent) -> str:
    """E.g. ``job 1b2c… JobFailed attempt 1: test: 2 specs failed``."""
    event = recorded.event
    words = [f"job {recorded.stream_id}", recorded.type]
    match event:
        case JobSubmitted():
            words.append(f"{event.org_id} {event.app_version_id} {event.test_path}")
            words.append(f"on {event.target}")
        case JobGrouped():
            words.append(f"into {event.group_key}")
        case JobFailed():
            words.append(f"attempt {event.attempt}: {event.kind}: {event.reason}")
        case JobTimedOut():
            words.append(f"{event.kind}: {event.reason}")
    return " ".join(words)


async def log_transitions(url: str, stop: asyncio.Event, *, poll_interval: float = 1.0) -> None:
    """Log every job event committed from now until *stop* is set."""
    async with (
        Listener(url) as listener,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        checkpoint = await head(conn)
        while not stop.is_set():
            checkpoint = await _log_new(conn, checkpoint)
            await listener.wait(poll_interval, stop=stop)


async def _log_new(conn: psycopg.AsyncConnection[Any], checkpoint: Checkpoint) -> Checkpoint:
    while batch := await read_after(conn, checkpoint, limit=500):
        for recorded in batch:
            if isinstance(recorded.event, JOB_EVENTS):
                _log.info(describe(recorded))
        checkpoint = Checkpoint.after(batch[-1])
    return checkpoint
