"""Waking an agent's idle slots: one of each kind, per target.

A notification that work may wait for a target (migrations/040_open_jobs.sql), or the
agent's poll timer, wakes one idle slot of each kind the agent has of that target (a
kind is what a slot offers: target, platform, device, OS version), since which kind
the work is for only a claim can tell; a slot that claimed something wakes the next of
its kind, so a suite spreads over idle slots one claim at a time, and a job wakes one
slot of each kind that might take it. A wake-up that finds no slot of a kind idle is
kept for the next one to go idle, which claims once more instead of waiting: a job
submitted while every slot was busy, or while a claim was under way, is not left for
the poll timer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Hashable, Iterable

__all__ = ["WakeUps"]


class WakeUps:
    def __init__(self, kinds: Iterable[tuple[str, Hashable]]) -> None:
        """*kinds*: each slot kind the agent has, as (its target, the kind)."""
        self._kinds_of: defaultdict[str, set[Hashable]] = defaultdict(set)
        for target, kind in kinds:
            self._kinds_of[target].add(kind)
        self._idle: defaultdict[Hashable, deque[asyncio.Event]] = defaultdict(deque)
        #: Kinds woken while none of their slots was idle.
        self._pending: set[Hashable] = set()

    async def idle(self, kind: Hashable) -> None:
        """Wait, as an idle slot of *kind*, until woken (at once if a wake-up is kept)."""
        if kind in self._pending:
            self._pending.discard(kind)
            return
        woken = asyncio.Event()
        self._idle[kind].append(woken)
        try:
            await woken.wait()
        finally:
            if woken in self._idle[kind]:
                self._idle[kind].remove(woken)

    def wake_target(self, target: str) -> None:
        """Wake one slot of each kind of *target*."""
        for kind in self._kinds_of[target]:
            self.wake_kind(kind)

    def wake_kind(self, kind: Hashable) -> None:
        """Wake the slot of *kind* idle longest, or keep the wake-up for the next one."""
        waiting = self._idle[kind]
        if waiting:
            waiting.popleft().set()
        else:
            self._pending.add(kind)

    def wake_all(self) -> None:
        """Wake every idle slot (the agent is stopping)."""
        for waiting in self._idle.values():
            while waiting:
                waiting.popleft().set()
