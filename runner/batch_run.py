"""One claimed batch on a slot: install its app, run it through the executor, record outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from ledger.blobs import digest_of_reference
from ledger.errors import InfrastructureError, TransitionRefused
from ledger.events import Event, JobStarted, JobTimedOut, TimeoutKind
from runner._sql import QUERIES
from runner.claim import Claim
from runner.devices import DeviceStream
from runner.executors import Batch, BatchJob, Outcome
from runner.jobs import HeldJob, hand_back, outcome_events
from runner.services import SlotServices
from runner.uploads import Upload, UploadKey

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
        #: What the batch runs, once prepared: its bundle (``sha256:<hex>``) and the
        #: directory it is unpacked in, and its build as the ledger names it.
        self._bundle: str | None = None
        self._project_dir: Path | None = None
        self._ran_build: str | None = None
        #: The build the batch's jobs name, which the first of them names.
        self._named_build: str | None = None

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
        """Fetch what the batch runs and install its app on the slot unless it is there;
        return the build to use. Raises InfrastructureError (BlobCorrupt for a fetch
        that does not match its digest) before anything runs."""
        claim, device = self._claim, self._device
        await self._fetch_bundle(conn)
        build = self._ran_build = self._named_build = next(
            (job.build for job in claim.jobs if job.build), None
        )
        digest = build if build and digest_of_reference(build) else None
        if digest is not None:
            build = str(await self._services.blobs.build(claim.org_id, digest))
        if device.spec.target == "browserstack":
            return await self._upload(conn, build, digest)
        if device.installed != claim.app_version_id:
            await self._install(conn, build)
        return build

    async def _fetch_bundle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Unpack the bundle the batch's specs run from, if its jobs name one, with its
        dependencies installed when the executor needs them."""
        params = {"job_ids": list(self.jobs)}
        rows = await (await conn.execute(QUERIES["job_bundles"], params)).fetchall()
        bundles = {bundle for _, bundle in rows}
        if len(bundles) > 1:
            # The group key holds the bundle (ledger/grouping.py), so this is a broken group.
            raise InfrastructureError(f"the batch's jobs name different test bundles: {bundles}")
        bundle = bundles.pop() if bundles else None
        if bundle is None:
            return
        blobs = self._services.blobs
        project_dir = await blobs.bundle(self._claim.org_id, bundle)
        if self._services.executor.needs_dependencies:
            await blobs.install_dependencies(project_dir)
        self._bundle, self._project_dir = bundle, project_dir

    async def _upload(
        self, conn: psycopg.AsyncConnection[Any], build: str | None, digest: str | None
    ) -> str | None:
        """The build's ``bs://`` id: uploaded once per organisation and build, then reused
        across batches and agents until it expires (runner/uploads.py)."""
        claim, device, services = self._claim, self._device, self._services
        key = UploadKey(org_id=claim.org_id, app_version_id=claim.app_version_id, build=digest)
        now = _now()
        async with services.uploads.turn(conn, key, now) as known:
            if known is not None and device.installed == claim.app_version_id:
                self._ran_build = known.reference
                return known.reference
            if known is not None:
                build = known.reference
            reference = await self._install(conn, build)
            if reference and reference.startswith("bs://") and reference != build:
                lifetime = dt.timedelta(seconds=services.config.upload_lifetime_s)
                upload = Upload(reference=reference, expires_at=now + lifetime)
                await device.uploaded_build(conn, upload.event(key), claim.org_id)
                services.uploads.remember(key, upload)
                build = reference
        if build and build.startswith("bs://"):
            self._ran_build = build
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
                    build=self._job_build(job, build),
                    attempt=job.attempt,
                )
                for job in self.jobs.values()
                if not job.settled
            ),
            timeout_s=sum(job.timeout_s for job in self.jobs.values()),
            project_dir=self._project_dir,
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
        device = self._device
        started = JobStarted(
            attempt=job.attempt,
            bundle=self._bundle,
            build=self._ran_build,
            device_id=device.device_id,
            device=f"{device.spec.name} ({device.spec.describe()})",
            agent_id=self._services.agent_id,
        )
        self._write(job, [started])

    async def finished(self, outcome: Outcome) -> None:
        job = self.jobs[outcome.job_id]
        if job.settled:
            return
        job.finished = True
        self._write(job, self._outcome_events(job, outcome))

    # ---- helpers ------------------------------------------------------------------------------

    def _job_build(self, job: HeldJob, build: str | None) -> str | None:
        """The build the executor gets for *job*: the batch's, prepared, when the job names
        the batch's (on BrowserStack always), else what the job names, which the executor
        refuses as a different build."""
        if self._device.spec.target == "browserstack":
            return build
        if job.build is not None and job.build == self._named_build:
            return build
        return job.build

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
