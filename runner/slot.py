"""A device slot: claim a batch, install its app if needed, run it, record how it went.

The executor reports each job's start and outcome as they happen; they go to the
agent's EventWriter at once and the slot carries on, so results are appended in
batches. A batch is over once every one of its jobs ended — passed, failed, timed out,
handed back, or ended by someone else (a cancel, a rescue) — and all of it is in the
ledger; only then does the slot claim again (the claim ends the batch's occupancy).

Stopping a batch early, by cancelling the executor's task (which kills its processes):

- a user cancelled a job that is running: its events stop (the API recorded the
  cancel); the batch's other unfinished jobs are handed back;
- the agent drains (SIGTERM): the test running now finishes, the next one does not
  start, and the rest is handed back; after ``drain_timeout_s`` the running one is
  stopped and handed back too;
- the agent lost its lease: everything unfinished is handed back at once (the appends
  lose if a rescuer got there first, as they should);
- the batch outlived its run timeout plus ``kill_grace_s`` (the executor enforces the
  timeout itself first): its unfinished jobs time out.

A hand-back is a JobRetryScheduled with ``handed_back`` set, due at once: the attempt
ends without a verdict and does not count against the job's limits.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import attrs
import psycopg

from runner._sql import QUERIES
from runner.batch_run import BatchRun
from runner.claim import Claim, LeaseLost, SlotIdentity, claim_batch
from runner.config import AgentConfig
from runner.devices import DeviceStream
from runner.executors import Executor
from runner.fresh import FreshJobs
from runner.jobs import HeldJob
from runner.queue_view import QueueView, UnitKey
from runner.rescue import hand_back_unknown
from runner.wake import Wakeup
from runner.writer import EventWriter

__all__ = ["Slot", "SlotServices"]

_log = logging.getLogger(__name__)
_RECONNECT_DELAY_S = 1.0


@attrs.frozen(kw_only=True)
class SlotServices:
    """What an agent's slots share."""

    url: str
    agent_id: str
    config: AgentConfig
    executor: Executor
    writer: EventWriter
    wakeup: Wakeup
    rng: random.Random
    #: BrowserStack references by app version, once known.
    build_refs: dict[str, str]
    #: One lock per app version, so that the agent uploads a build once.
    uploads: defaultdict[str, asyncio.Lock]
    #: The agent's picture of the queue, per target.
    views: dict[str, QueueView]
    #: Jobs grouped since the agent last read the ledger, for idle slots.
    fresh: FreshJobs
    #: What each busy slot of the agent runs, by device id.
    running: dict[UUID, UnitKey]
    #: Set when a slot finds the agent's lease lapsed.
    lease_lost: asyncio.Event


class Slot:
    """Runs batches on one device slot until told to stop."""

    def __init__(self, services: SlotServices, device: DeviceStream) -> None:
        self._services = services
        self.device = device
        self.identity = SlotIdentity(
            device_id=device.device_id, agent_id=services.agent_id, target=device.spec.target
        )
        self._actor = f"runner:{services.agent_id}"
        self._batch: BatchRun | None = None
        self._stopping: str | None = None
        #: The wake-up generation at which the slot last tried to claim.
        self._tried_at = 0

    def held(self) -> list[HeldJob]:
        """The jobs of the current batch that have not ended yet."""
        if self._batch is None:
            return []
        return [job for job in self._batch.jobs.values() if not job.settled]

    def jobs_ended_elsewhere(self, job_ids: Iterable[UUID], *, cancelled: bool) -> None:
        """Someone else ended these jobs (cancelled, or moved their streams on)."""
        if self._batch is not None:
            self._batch.ended_elsewhere(set(job_ids), cancelled=cancelled)

    def stop(self, reason: str, *, at_once: bool) -> None:
        """Claim no more; hand back the current batch's rest (at once, or after this test)."""
        self._stopping = reason
        if self._batch is not None:
            self._batch.stop(reason, at_once=at_once)

    async def run(self) -> None:
        """Claim and run batches until stopped; then give up the slot's occupancy."""
        services = self._services
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    services.url, autocommit=True
                ) as conn:
                    # After a lost connection, a claim may have committed unbeknown to us.
                    await hand_back_unknown(
                        conn, self.identity.device_id, services.agent_id, self._actor
                    )
                    await self._loop(conn)
                    await conn.execute(
                        QUERIES["release_slot"],
                        {"device_id": self.identity.device_id, "agent_id": services.agent_id},
                    )
                    return
            except psycopg.OperationalError as error:
                _log.warning("slot %s lost its connection (%s)", self.device.spec.name, error)
                await asyncio.sleep(_RECONNECT_DELAY_S)

    async def _loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        services, config = self._services, self._services.config
        idle = notified = False
        while self._stopping is None:
            try:
                claim = await self._claim(conn, idle=idle, notified=notified)
            except LeaseLost:
                services.lease_lost.set()
                return
            idle = claim is None
            if claim is None:
                notified = await services.wakeup.wait(config.poll_interval_s)
                continue
            self._batch = BatchRun(self._services, self.device, claim)
            if self._stopping is not None:
                self._batch.stop(self._stopping, at_once=True)
            try:
                await self._batch.execute(conn)
            finally:
                self._batch = None
                services.running.pop(self.identity.device_id, None)

    async def _end_batch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """End the last batch's occupancy; raise LeaseLost if the agent's lease lapsed."""
        ids = {"device_id": self.identity.device_id, "agent_id": self._services.agent_id}
        row = await (await conn.execute(QUERIES["end_batch"], ids)).fetchone()
        if row is None or not row[0]:
            raise LeaseLost()

    async def _claim(
        self, conn: psycopg.AsyncConnection[Any], *, idle: bool, notified: bool
    ) -> Claim | None:
        """Claim a batch; *idle*: the last claim found nothing, and since then the slot
        was *notified* of new events (or its poll timer fired).

        Idle slots of a target take turns, and one that was notified skips its claim when
        a sibling found nothing after the same notification: a notification wakes every
        idle slot, and without this each would run a claim for what one finds. It skips it
        too when all it heard of since it last tried were jobs announced by their submit,
        and none of them is left for its target.
        """
        services, config = self._services, self._services.config
        view, fresh = services.views[self.identity.target], services.fresh
        generation = services.wakeup.generation

        async def claim() -> Claim | None:
            await fresh.look(conn)
            if not fresh.any_for(self.identity.target) and not await view.any_queued(conn):
                # Nothing to take, so no claim's transaction; the last batch's occupancy
                # (an idle slot's ended already) ends here instead.
                if not idle:
                    await self._end_batch(conn)
                return None
            return await claim_batch(
                conn,
                self.identity,
                view=view,
                fresh=fresh,
                fresh_first=idle,
                running=services.running,
                installed=[self.device.installed] if self.device.installed else [],
                policy=config.policy,
                default_timeout_s=config.default_timeout_s,
            )

        tried_at, self._tried_at = self._tried_at, generation
        if not idle:
            return await claim()
        async with view.idle_claims:
            if notified and view.found_nothing_at == generation:
                return None
            no_news = services.wakeup.news_at <= tried_at
            if notified and no_news and not fresh.any_for(self.identity.target):
                return None
            claimed = await claim()
            if claimed is None:
                view.found_nothing_at = generation
            return claimed
