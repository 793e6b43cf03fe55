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

from ledger.announcement import GroupedJob
from runner._sql import QUERIES
from runner.batch_run import BatchRun
from runner.claim import BatchGiven, Claim, LeaseLost, SlotIdentity, claim_batch
from runner.config import AgentConfig
from runner.devices import DeviceStream
from runner.executors import Executor
from runner.fresh import FreshJobs
from runner.jobs import HeldJob
from runner.queue_view import QueueView, UnitKey
from runner.rescue import hand_back_unknown
from runner.standing import given_claim, stand
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
        #: The jobs of the slot's last batch, whose occupancy its next claim ends.
        self._last_batch: list[UUID] = []
        #: The slot left a standing claim (runner/standing.py) and has not withdrawn it.
        self._standing = False
        #: The jobs a submit gave the slot's standing claim, once the agent heard of them.
        self._given: list[GroupedJob] | None = None

    def held(self) -> list[HeldJob]:
        """The jobs of the current batch that have not ended yet."""
        if self._batch is None:
            return []
        return [job for job in self._batch.jobs.values() if not job.settled]

    def jobs_ended_elsewhere(self, job_ids: Iterable[UUID], *, cancelled: bool) -> None:
        """Someone else ended these jobs (cancelled, or moved their streams on)."""
        if self._batch is not None:
            self._batch.ended_elsewhere(set(job_ids), cancelled=cancelled)

    def given(self, jobs: list[GroupedJob]) -> None:
        """A submit gave these jobs to the slot's standing claim."""
        self._given = jobs
        self._services.wakeup.wake(self)

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
                    # After a lost connection, a claim (or a submit, for the standing
                    # claim) may have given the slot a batch unbeknown to it.
                    await self._settle(conn)
                    await self._loop(conn)
                    await self._settle(conn)  # the slot's occupancy ends with it
                    return
            except psycopg.OperationalError as error:
                _log.warning("slot %s lost its connection (%s)", self.device.spec.name, error)
                await asyncio.sleep(_RECONNECT_DELAY_S)

    async def _loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        services, config = self._services, self._services.config
        idle = notified = False
        while self._stopping is None:
            try:
                claim = await self._next_batch(conn, idle=idle, notified=notified)
            except LeaseLost:
                services.lease_lost.set()
                return
            idle = claim is None
            if claim is None:
                # A batch given meanwhile wakes no one: it was handed over before the wait.
                notified = self._given is not None or await services.wakeup.wait(
                    config.poll_interval_s, waiter=self
                )
                continue
            self._last_batch = [job.job_id for job in claim.jobs]
            self._batch = BatchRun(self._services, self.device, claim)
            if self._stopping is not None:
                self._batch.stop(self._stopping, at_once=True)
            try:
                await self._batch.execute(conn)
            finally:
                self._batch = None
                services.running.pop(self.identity.device_id, None)

    async def _settle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Withdraw the standing claim and end the last batch; hand back a batch the slot
        holds but does not know of."""
        ids = {"device_id": self.identity.device_id, "agent_id": self._services.agent_id}
        row = await (
            await conn.execute(QUERIES["begin_claim"], {**ids, "last_batch": self._last_batch})
        ).fetchone()
        if row is not None and row[0] == "given":
            await self._hand_back_given(conn)
        self._standing, self._last_batch = False, []

    async def _next_batch(
        self, conn: psycopg.AsyncConnection[Any], *, idle: bool, notified: bool
    ) -> Claim | None:
        """The slot's next batch: one a submit gave it, or one it claims; None when there is
        none for it now. Raises LeaseLost."""
        given = self._take_given()
        if given is not None:
            return given
        try:
            if self._standing and idle and not notified:
                # A poll: the notification of a batch given to the slot may have been lost.
                await self._check_standing(conn)
            return await self._claim(conn, idle=idle, notified=notified)
        except BatchGiven:
            # Most likely a submit fulfilled the standing claim this claim went to withdraw.
            given = self._take_given()
            if given is None:
                await self._hand_back_given(conn)
            return given

    def _take_given(self) -> Claim | None:
        jobs, self._given = self._given, None
        if jobs is None or not self._standing:
            return None  # no standing claim of the slot's was fulfilled with these
        self._standing = False
        claim, unit = given_claim(jobs, self.identity, self._services.config.default_timeout_s)
        self._services.running[self.identity.device_id] = unit
        return claim

    async def _hand_back_given(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hand back a batch the slot holds but never heard of, and end its occupancy."""
        services = self._services
        await hand_back_unknown(conn, self.identity.device_id, services.agent_id, self._actor)
        await conn.execute(
            QUERIES["release_slot"],
            {"device_id": self.identity.device_id, "agent_id": services.agent_id},
        )
        self._standing, self._last_batch = False, []

    async def _check_standing(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Raise BatchGiven if the slot's standing claim is gone."""
        ids = {"device_id": self.identity.device_id, "agent_id": self._services.agent_id}
        row = await (await conn.execute(QUERIES["still_standing"], ids)).fetchone()
        if row is None or not row[0]:
            raise BatchGiven()

    async def _stand(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await stand(
            conn,
            self.identity,
            last_batch=self._last_batch,
            installed=self.device.installed,
        )
        self._standing, self._last_batch = True, []

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
            if fresh.any_for(self.identity.target) or await view.any_queued(conn):
                claimed = await claim_batch(
                    conn,
                    self.identity,
                    view=view,
                    fresh=fresh,
                    fresh_first=idle,
                    running=services.running,
                    installed=[self.device.installed] if self.device.installed else [],
                    policy=config.policy,
                    default_timeout_s=config.default_timeout_s,
                    last_batch=self._last_batch,
                )
                self._standing = False  # the claim withdrew it
                if claimed is not None:
                    return claimed
            # Nothing to take: the slot stands (its last batch ends here if no claim
            # ended it), unless it does already.
            if not self._standing:
                await self._stand(conn)
            return None

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
