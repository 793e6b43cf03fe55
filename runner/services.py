"""What an agent's slots share: its executor, its writer, its wake-ups and its settings."""

from __future__ import annotations

import asyncio
import random

import attrs

from runner.blob_cache import BlobCache
from runner.config import AgentConfig
from runner.executors import Executor
from runner.uploads import Uploads
from runner.wakeups import WakeUps
from runner.writer import EventWriter

__all__ = ["SlotServices"]


@attrs.frozen(kw_only=True)
class SlotServices:
    """What an agent's slots share."""

    url: str
    agent_id: str
    config: AgentConfig
    executor: Executor
    writer: EventWriter
    wakeups: WakeUps
    rng: random.Random
    #: The bundles and builds jobs name, fetched by digest.
    blobs: BlobCache
    #: BrowserStack uploads, made once per organisation and build.
    uploads: Uploads
    #: Set when a slot finds the agent's lease lapsed.
    lease_lost: asyncio.Event
