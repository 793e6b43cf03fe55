"""One claimed batch on a slot: install its app, run it through the executor, record outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import psycopg

from ledger.errors import InfrastructureError, TransitionRefused
from ledger.events import Event, JobStarted, JobTimedOut, TimeoutKind
from runner.claim import Claim
from runner.devices import DeviceStream, uploaded_build
from runner.executors import Batch, BatchJob, Outcome
from runner.jobs import HeldJob, hand_back, outcome_events
from runner.services import SlotServices

__all__ = ["BatchRun"]

_log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BatchRun:
    """One claimed batch on its way through the executor; also its BatchReporter."""

    def __init__(self, services: SlotServices, device: DeviceStream, claim: Claim) -> None:
        self._services = services
        self._device = device
        self._claim = claim
        self.jobs = {job.job_id: job for job in claim.jobs}
        self._task: asyncio.Task[None] | None = None
        #: Why the executor is being stopped early, once it is.
        self._stop_reason: str | None = None
        self._timed_out = False
        #: What went wrong when the executor itself failed.
        self._crash: str | None = None
        self._written: list[asyncio.Future[None]] = []

    # ---- control, from the agent ------------------------------------------------------------

    def ended_elsewhere(self, job_ids: set[UUID]) -> None:
        """Another writer ended these jobs (a cancel, a rescue): stop the one running."""
        running = []
        for job_id in job_ids & self.jobs.keys():
            job = self.jobs[job_id]
            if job.finished:
                continue
            if job.started:
                running.append(job_id)
            job.lost = True
        if running:
            self._halt(
                f"job {running[0]} of the same batch ended elsewhere (cancelled, or handed on)"
            )

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
        try:
            if self._stop_reason is None:
                await self._prepare_and_run(conn)
        except psycopg.Error as error:
            # Recording an install failed: the batch cannot be accounted for as it runs.
            # Nothing is wrong with the jobs or the device, so they are handed back.
            _log.warning("slot %s: %s", self._device.spec.name, error)
            self._stop_reason = f"the runner lost its database connection ({error})"
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
                self._write(job, self._outcome_events(job, outcome))

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
        self._write(job, self._outcome_events(job, outcome))

    # ---- helpers ------------------------------------------------------------------------------

    def _outcome_events(self, job: HeldJob, outcome: Outcome) -> list[Event]:
        return outcome_events(
            job,
            outcome,
            policy=self._services.config.retry,
            now=_now(),
            rng=self._services.rng,
        )

    def _write(self, job: HeldJob, events: Iterable[Event]) -> None:
        try:
            self._written.append(self._services.writer.write(job, events))
        except TransitionRefused as error:
            # The job's history moved in a way this slot did not see; leave it be.
            _log.error("job %s: %s", job.job_id, error)
            job.lost = True
