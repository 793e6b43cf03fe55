"""One wake-up call for many waiters: every idle slot and watcher of an agent.

The agent listens once (ledger.wakeup.Listener) and fires a Wakeup as each
notification arrives; waiters return on the next fire or when their own poll timeout
passes. Each fire starts a new generation, so that work worth doing once per notification
(a look at the queue that found nothing) is done once, not by every waiter it woke.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wakeup"]


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        #: How many times it fired.
        self.generation = 0
        #: The generation of the last fire that was news to every waiter.
        self.news_at = 0

    def fire(self, *, news: bool = True) -> None:
        """Wake everyone waiting now. Not *news*: the fire only brought jobs announced
        by their submit (runner/fresh.py), which an idle slot finds there or not at all."""
        self.generation += 1
        if news:
            self.news_at = self.generation
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Return True at the next fire, or False after *timeout* seconds."""
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives
        # as the wait ends, leaving the caller running after it was cancelled.
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return event.is_set()
