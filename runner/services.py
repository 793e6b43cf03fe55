"""What an agent's slots share: its executor, its writer, its wake-ups and its settings."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import attrs

from runner.config import AgentConfig
from runner.executors import Executor
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
    #: BrowserStack references by app version, once known.
    build_refs: dict[str, str]
    #: One lock per app version, so that the agent uploads a build once.
    uploads: defaultdict[str, asyncio.Lock]
    #: Set when a slot finds the agent's lease lapsed.
    lease_lost: asyncio.Event
