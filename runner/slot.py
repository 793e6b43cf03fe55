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
import datetime as dt
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import attrs
import psycopg

from ledger.errors import InfrastructureError, TransitionRefused
from ledger.events import Event, JobStarted, JobTimedOut, TimeoutKind
from ledger.wakeup import Notifier
from runner._sql import QUERIES
from runner.claim import Claim, LeaseLost, SlotIdentity, claim_batch
from runner.config import AgentConfig
from runner.devices import DeviceStream, uploaded_build
from runner.executors import Batch, BatchJob, Executor, Outcome
from runner.jobs import HeldJob, hand_back, outcome_events
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
    notifier: Notifier
    wakeup: Wakeup
    rng: random.Random
    #: BrowserStack references by app version, once known.
    build_refs: dict[str, str]
    #: One lock per app version, so that the agent uploads a build once.
    uploads: defaultdict[str, asyncio.Lock]
    #: The agent's picture of the queue, per target.
    views: dict[str, QueueView]
    #: What each busy slot of the agent runs, by device id.
    running: dict[UUID, UnitKey]
    #: Set when a slot finds the agent's lease lapsed.
    lease_lost: asyncio.Event


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Slot:
    """Runs batches on one device slot until told to stop."""

    def __init__(self, services: SlotServices, device: DeviceStream) -> None:
        self._services = services
        self.device = device
        self.identity = SlotIdentity(
            device_id=device.device_id, agent_id=services.agent_id, target=device.spec.target
        )
        self._actor = f"runner:{services.agent_id}"
        self._batch: _BatchRun | None = None
        self._stopping: str | None = None

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
        while self._stopping is None:
            installed = [self.device.installed] if self.device.installed else []
            try:
                claim = await claim_batch(
                    conn,
                    self.identity,
                    view=services.views[self.identity.target],
                    running=services.running,
                    installed=installed,
                    policy=config.policy,
                    default_timeout_s=config.default_timeout_s,
                )
            except LeaseLost:
                services.lease_lost.set()
                return
            if claim is None:
                await services.wakeup.wait(config.poll_interval_s)
                continue
            services.notifier.poke()
            self._batch = _BatchRun(self._services, self.device, claim)
            if self._stopping is not None:
                self._batch.stop(self._stopping, at_once=True)
            try:
                await self._batch.execute(conn)
            finally:
                self._batch = None
                services.running.pop(self.identity.device_id, None)


class _BatchRun:
    """One claimed batch on its way through the executor; also its BatchReporter."""

    def __init__(self, services: SlotServices, device: DeviceStream, claim: Claim) -> None:
        self._services = services
        self._device = device
        self._claim = claim
        self.jobs = {job.job_id: job for job in claim.jobs}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Why the executor is being stopped early, once it is.
        self._stop_reason: str | None = None
        self._timed_out = False
        #: What went wrong when the executor itself failed.
        self._crash: str | None = None
        self._written: list[asyncio.Future[None]] = []

    # ---- control, from the agent ------------------------------------------------------------

    def ended_elsewhere(self, job_ids: set[UUID], *, cancelled: bool) -> None:
        running = []
        for job_id in job_ids & self.jobs.keys():
            job = self.jobs[job_id]
            if job.finished:
                continue
            if job.started:
                running.append(job_id)
            if cancelled:
                job.cancelled = True
            else:
                job.lost = True
        if running:
            what = "cancelled" if cancelled else "ended by another writer"
            self._halt(f"job {running[0]} of the same batch was {what}")

    def stop(self, reason: str, *, at_once: bool) -> None:
        if at_once or not any(job.started and not job.settled for job in self.jobs.values()):
            self._halt(reason)
            return
        # The running test finishes; started() refuses the next one.
        self._stop_reason = self._stop_reason or reason
        asyncio.get_running_loop().call_later(
            self._services.config.drain_timeout_s, self._halt, reason
        )

    def _halt(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # ---- the batch ----------------------------------------------------------------------------

    async def execute(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        try:
            if self._stop_reason is None:
                await self._prepare_and_run(conn)
        except psycopg.Error as error:
            # Recording an install failed: the batch cannot be accounted for as it runs.
            _log.warning("slot %s: %s", self._device.spec.name, error)
            self._crash = f"the runner lost its database connection: {error}"
        self._end_the_rest()
        await asyncio.gather(*self._written)

    async def _prepare_and_run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            build = await self._prepare(conn)
        except (InfrastructureError, OSError) as error:
            message = error.message if isinstance(error, InfrastructureError) else str(error)
            for job in self.jobs.values():
                outcome = Outcome(job_id=job.job_id, status="error", message=message, duration_s=0)
                await self.finished(outcome)
            return
        if self._stop_reason is None:
            await self._run(build)

    async def _prepare(self, conn: psycopg.AsyncConnection[Any]) -> str | None:
        """Install the batch's app on the slot unless it is there; return the build to use.

        On BrowserStack the build is uploaded once per app version: the agent's slots take
        turns per version, and reuse the ``bs://`` id recorded by whoever uploaded it.
        """
        claim, device = self._claim, self._device
        build = next((job.build for job in claim.jobs if job.build), None)
        if device.spec.target != "browserstack":
            if device.installed != claim.app_version_id:
                await self._install(conn, build)
            return build
        refs = self._services.build_refs
        async with self._services.uploads[claim.app_version_id]:
            reference = refs.get(claim.app_version_id) or await uploaded_build(
                conn, claim.app_version_id
            )
            if reference is not None:
                refs[claim.app_version_id] = build = reference
            if device.installed == claim.app_version_id:
                return build
            reference = await self._install(conn, build)
            if reference and reference.startswith("bs://") and reference != build:
                await device.uploaded_build(conn, claim.app_version_id, reference, claim.org_id)
                refs[claim.app_version_id] = build = reference
        return build

    async def _install(self, conn: psycopg.AsyncConnection[Any], build: str | None) -> str | None:
        claim, device = self._claim, self._device
        reference = await self._services.executor.install(device.spec, claim.app_version_id, build)
        await device.installed_app(conn, claim.app_version_id, claim.group_id, claim.org_id)
        return reference

    async def _run(self, build: str | None) -> None:
        config = self._services.config
        batch = Batch(
            slot=self._device.spec,
            app_version_id=self._claim.app_version_id,
            jobs=tuple(
                BatchJob(
                    job_id=job.job_id,
                    test_path=job.test_path,
                    build=build if self._device.spec.target == "browserstack" else job.build,
                    attempt=job.attempt,
                )
                for job in self.jobs.values()
                if not job.settled
            ),
            timeout_s=sum(job.timeout_s for job in self.jobs.values()),
        )
        task = self._task = asyncio.create_task(self._services.executor.run(batch, self))
        try:
            done, _ = await asyncio.wait({task}, timeout=batch.timeout_s + config.kill_grace_s)
            if not done:
                self._timed_out = True
                self._halt(f"the batch ran past its {batch.timeout_s:g} s run timeout")
            await task
        except asyncio.CancelledError:
            if task.done() and self._stop_reason is not None:
                return
            # This slot itself is being cancelled: take the executor down with it.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        except Exception as error:
            _log.exception("executor %s failed", self._services.executor.name)
            self._crash = f"the executor failed: {error!r}"

    def _end_the_rest(self) -> None:
        """Record an end for every job the executor left without one."""
        now = _now()
        for job in self.jobs.values():
            if job.settled:
                continue
            job.finished = True
            if self._timed_out:
                reason = self._stop_reason or "the batch timed out"
                timed_out = JobTimedOut(kind=TimeoutKind.RUN, reason=reason, attempt=job.attempt)
                self._write(job, [timed_out])
            elif self._stop_reason is not None:
                self._write(job, hand_back(job, self._stop_reason, now))
            else:
                reason = self._crash or "the executor reported no outcome"
                outcome = Outcome(job_id=job.job_id, status="error", message=reason, duration_s=0)
                self._write(job, self._outcome_events(job, outcome, counted_attempts=job.attempt))

    # ---- BatchReporter ------------------------------------------------------------------------

    async def started(self, job_id: UUID) -> None:
        if self._stop_reason is not None:
            # Draining or stopping: no further test starts. The executor stops what it
            # started, as on any cancellation, and the slot hands back what is left.
            raise asyncio.CancelledError()
        job = self.jobs[job_id]
        if job.settled:
            return
        job.started = True
        self._write(job, [JobStarted(attempt=job.attempt)])

    async def finished(self, outcome: Outcome) -> None:
        job = self.jobs[outcome.job_id]
        if job.settled:
            return
        job.finished = True
        counted = job.attempt
        if outcome.status in ("failed", "error") and job.attempt > 1:
            counted -= await self._handed_back(job)
        self._write(job, self._outcome_events(job, outcome, counted_attempts=counted))

    # ---- helpers ------------------------------------------------------------------------------

    def _outcome_events(
        self, job: HeldJob, outcome: Outcome, *, counted_attempts: int
    ) -> list[Event]:
        return outcome_events(
            job,
            outcome,
            counted_attempts=counted_attempts,
            policy=self._services.config.retry,
            now=_now(),
            rng=self._services.rng,
        )

    async def _handed_back(self, job: HeldJob) -> int:
        """How many of the job's attempts were handed back (they do not count)."""
        assert self._conn is not None
        try:
            cursor = await self._conn.execute(
                QUERIES["handed_back_attempts"], {"job_id": job.job_id}
            )
            row = await cursor.fetchone()
        except psycopg.Error as error:
            _log.warning("cannot count handed-back attempts of %s (%s)", job.job_id, error)
            return 0
        return int(row[0]) if row else 0

    def _write(self, job: HeldJob, events: Iterable[Event]) -> None:
        try:
            self._written.append(self._services.writer.write(job, events))
        except TransitionRefused as error:
            # The job's history moved in a way this slot did not see; leave it be.
            _log.error("job %s: %s", job.job_id, error)
            job.lost = True
