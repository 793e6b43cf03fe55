"""A device slot: claim a batch, install its app if needed, run it, record how it went.

The slot claims (runner/claim.py) whenever it is free: after a batch, at once; when a
claim found nothing, once woken (runner/wakeups.py). The executor reports each job's
start and outcome as they happen; they go to the agent's EventWriter and the slot
carries on, so results are appended in batches. A batch is over once every one of its
jobs ended — passed, failed, timed out, handed back, or ended by someone else (a
cancel, a rescue) — and all of it is in the ledger; only then does the slot claim again.

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
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import psycopg

from runner.batch_run import BatchRun
from runner.claim import LeaseLost, SlotIdentity, claim_batch
from runner.devices import DeviceStream
from runner.jobs import HeldJob
from runner.services import SlotServices

__all__ = ["Slot"]

_log = logging.getLogger(__name__)
_RECONNECT_DELAY_S = 1.0


class Slot:
    """Runs batches on one device slot until told to stop."""

    def __init__(self, services: SlotServices, device: DeviceStream) -> None:
        self._services = services
        self.device = device
        spec = device.spec
        self.identity = SlotIdentity(
            device_id=device.device_id,
            agent_id=services.agent_id,
            target=spec.target,
            platform=spec.platform,
            device=spec.device,
            os_version=spec.os_version,
        )
        self._batch: BatchRun | None = None
        self._stopping: str | None = None

    def held(self) -> list[HeldJob]:
        """The jobs of the current batch that have not ended yet."""
        if self._batch is None:
            return []
        return [job for job in self._batch.jobs.values() if not job.settled]

    def jobs_ended_elsewhere(self, job_ids: Iterable[UUID]) -> None:
        """Someone else ended these jobs (a cancel, a rescue)."""
        if self._batch is not None:
            self._batch.ended_elsewhere(set(job_ids))

    def stop(self, reason: str, *, at_once: bool) -> None:
        """Claim no more; hand back the current batch's rest (at once, or after this test)."""
        self._stopping = reason
        if self._batch is not None:
            self._batch.stop(reason, at_once=at_once)

    async def run(self) -> None:
        """Claim and run batches until stopped."""
        while self._stopping is None:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._services.url, autocommit=True
                ) as conn:
                    await self._loop(conn)
            except psycopg.OperationalError as error:
                _log.warning("slot %s lost its connection (%s)", self.device.spec.name, error)
                await asyncio.sleep(_RECONNECT_DELAY_S)

    async def _loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        services, config = self._services, self._services.config
        kind = self.device.spec.kind
        while self._stopping is None:
            try:
                claim = await claim_batch(
                    conn,
                    self.identity,
                    installed=[self.device.installed] if self.device.installed else [],
                    policy=config.policy,
                    default_timeout_s=config.default_timeout_s,
                )
            except LeaseLost:
                self._stopping = "the agent lost its lease"
                services.lease_lost.set()
                return
            if claim is None:
                # Told to stop while it claimed: the agent's wake-up of idle slots is past.
                if self._stopping is None:
                    await services.wakeups.idle(kind)
                continue
            # There may be more: the next idle slot of its kind looks too.
            services.wakeups.wake_kind(kind)
            self._batch = BatchRun(services, self.device, claim)
            if self._stopping is not None:
                self._batch.stop(self._stopping, at_once=True)
            try:
                await self._batch.execute(conn)
            finally:
                self._batch = None
