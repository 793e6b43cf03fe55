"""Waking an agent's idle slots: one at a time, per target.

A notification that work may wait for a target (migrations/040_open_jobs.sql), the
agent's poll timer, or a sibling that just claimed a batch wakes one idle slot of that
target, which claims; a slot that claimed something wakes the next, so a suite spreads
over idle slots one claim at a time, and a single job wakes a single slot. A wake-up
that finds no slot idle is kept for the next slot to go idle, which claims once more
instead of waiting: a job submitted while every slot was busy, or while a claim was
already under way, is not left for the poll timer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

__all__ = ["WakeUps"]


class WakeUps:
    def __init__(self) -> None:
        self._idle: defaultdict[str, deque[asyncio.Event]] = defaultdict(deque)
        #: Targets woken while none of their slots was idle.
        self._pending: set[str] = set()

    async def idle(self, target: str) -> None:
        """Wait, as an idle slot of *target*, until woken (at once if a wake-up is kept)."""
        if target in self._pending:
            self._pending.discard(target)
            return
        woken = asyncio.Event()
        self._idle[target].append(woken)
        try:
            await woken.wait()
        finally:
            if woken in self._idle[target]:
                self._idle[target].remove(woken)

    def wake_one(self, target: str) -> None:
        """Wake the slot of *target* idle longest, or keep the wake-up for the next one."""
        waiting = self._idle[target]
        if waiting:
            waiting.popleft().set()
        else:
            self._pending.add(target)

    def wake_all(self) -> None:
        """Wake every idle slot (the agent is stopping, or reconnected and may have missed
        notifications)."""
        for waiting in self._idle.values():
            while waiting:
                waiting.popleft().set()
