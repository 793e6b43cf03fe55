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
        #: Each waiter's future, with who waits on it.
        self._waiting: dict[asyncio.Future[None], object] = {}
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
        for future in self._waiting:
            if not future.done():
                future.set_result(None)

    def wake(self, waiter: object) -> None:
        """Wake *waiter* alone, if it is waiting; no new generation starts."""
        for future, who in self._waiting.items():
            if who is waiter and not future.done():
                future.set_result(None)

    async def wait(self, timeout: float, *, waiter: object = None) -> bool:
        """Return True at the next fire (or wake of *waiter*), or False after *timeout*
        seconds."""
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives
        # as the wait ends, leaving the caller running after it was cancelled.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[future] = waiter
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await future
        finally:
            del self._waiting[future]
        return future.done() and not future.cancelled()
