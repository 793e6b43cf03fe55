"""The AppWright executor: runs a batch's specs with ``npx appwright test``.

One invocation per batch, so the app is installed (or uploaded to BrowserStack) once
for all of its specs. The config is generated per batch, with one project named after
the slot; the verdicts come from Playwright's JSON report, which tells a failed test
from a run that never reached one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
from attrs import validators

from ledger.errors import InfrastructureError

from . import _process_group
from ._appwright_build import check_template, resolve_build
from ._appwright_config import ConfigPaths, render_config
from ._appwright_verdicts import judge, keep_attachments, outcome, read_tail
from ._browserstack_upload import DEFAULT_UPLOAD_URL, upload_build
from ._playwright_report import Report, ReportUnreadable, read_report
from .base import (
    Batch,
    BatchJob,
    BatchReporter,
    SlotSpec,
)

__all__ = ["AppWrightExecutor"]

_WHITESPACE = re.compile(r"\s")


def _absolute(value: str | os.PathLike[str]) -> Path:
    return Path(value).absolute()


def _no_whitespace(_instance: object, attribute: attrs.Attribute[Path], value: Path) -> None:
    # The config path goes on AppWright's command line, which it re-splits on spaces.
    if _WHITESPACE.search(str(value)):
        raise ValueError(f"{attribute.name} must not contain whitespace: {str(value)!r}")


@attrs.frozen(kw_only=True)
class AppWrightExecutor:
    """Runs batches as ``npx appwright test <specs…> --config <generated> --project <slot>``."""

    #: The AppWright project (package.json, node_modules, specs); the run's working dir
    #: for jobs that name no test bundle.
    project_dir: Path = attrs.field(converter=_absolute)
    #: Where builds live when a job names none, e.g. ``builds/{app_version_id}.apk``,
    #: relative to project_dir unless absolute or a URL.
    build_template: str | None = attrs.field(default=None, validator=check_template)
    #: The npx executable.
    npx: str = "npx"
    #: Per-batch directories (config, log, reports, attachments) are created here.
    work_dir: Path = attrs.field(converter=_absolute, validator=_no_whitespace)
    #: How long a run gets to stop after each signal: after a timeout's SIGINT (for
    #: Playwright to write its report), then after SIGTERM, before SIGKILL.
    stop_grace_s: float = attrs.field(default=10.0, validator=validators.ge(0))
    #: Where builds for BrowserStack slots are uploaded.
    browserstack_upload_url: str = DEFAULT_UPLOAD_URL

    name = "appwright"
    needs_dependencies = True

    async def install(self, slot: SlotSpec, app_version_id: str, build: str | None) -> str:
        """Resolve the build the slot will run; AppWright itself installs or uploads it.

        Returns the ``buildPath`` for the config: for local devices an absolute local
        path (a URL is downloaded here, once per app version, since they need a file);
        for BrowserStack a ``bs://`` id, uploading the build to get one unless it is one
        already. Raises InfrastructureError naming the problem.
        """
        build_path = await resolve_build(
            slot,
            app_version_id,
            build,
            project_dir=self.project_dir,
            work_dir=self.work_dir,
            build_template=self.build_template,
        )
        if slot.target == "browserstack" and not build_path.startswith("bs://"):
            return await upload_build(build_path, upload_url=self.browserstack_upload_url)
        return build_path

    async def run(self, batch: Batch, reporter: BatchReporter) -> None:
        """Run the batch in one AppWright invocation and report every job's outcome."""
        first_build = next((job.build for job in batch.jobs if job.build), None)
        try:
            _check_project_name(batch.slot)
            build = await self.install(batch.slot, batch.app_version_id, first_build)
        except (InfrastructureError, OSError) as exc:
            await _finish_all(reporter, batch.jobs, _reason(exc))
            return
        project_dir = batch.project_dir or self.project_dir
        runnable: list[BatchJob] = []
        for job in batch.jobs:
            refusal = _refusal(job, first_build, project_dir)
            if refusal is None:
                runnable.append(job)
            else:
                await reporter.finished(outcome(job, "error", refusal, 0.0))
        if runnable:
            await self._run_process(batch, runnable, build, project_dir, reporter)

    async def _run_process(
        self,
        batch: Batch,
        jobs: Sequence[BatchJob],
        build: str,
        project_dir: Path,
        reporter: BatchReporter,
    ) -> None:
        batch_dir = self.work_dir / uuid.uuid4().hex
        paths = ConfigPaths(
            project_dir=project_dir,
            json_report=batch_dir / "report.json",
            junit_report=batch_dir / "junit.xml",
            html_report=batch_dir / "html-report",
            output_dir=batch_dir / "test-results",
        )
        config = batch_dir / "appwright.config.ts"
        log_path = batch_dir / "output.log"
        specs = list(dict.fromkeys(job.test_path for job in jobs))
        argv = [self.npx, "appwright", "test", *specs, "--config", str(config)]
        argv += ["--project", batch.slot.name]
        started = time.monotonic()
        try:
            batch_dir.mkdir(parents=True)
            config.write_text(render_config(batch.slot, build, paths), encoding="utf-8")
            with log_path.open("wb") as log:
                proc = await _process_group.spawn(
                    argv, cwd=project_dir, env=_environment(paths), log=log
                )
        except (InfrastructureError, OSError) as exc:
            await _finish_all(reporter, jobs, _reason(exc))
            return
        try:
            for job in jobs:
                await reporter.started(job.job_id)
            timed_out = await self._wait(proc, batch.timeout_s)
            # Whatever is left (Appium, a run that ignored SIGINT) goes now.
            await _process_group.stop_group(proc.pid, signal.SIGTERM, self.stop_grace_s)
            await proc.wait()
        except BaseException:
            # Cancelled (or the reporter failed): nothing of this run may outlive it.
            _process_group.kill_group(proc.pid)
            await proc.wait()
            raise
        elapsed = time.monotonic() - started
        log_tail = read_tail(log_path)
        try:
            report: Report | None = read_report(paths.json_report, default_root=paths.project_dir)
        except ReportUnreadable:
            report = None
        if report is not None:
            keep_attachments(report, project_dir / "playwright-report", batch_dir)
        for job in jobs:
            await reporter.finished(
                judge(
                    job,
                    report,
                    project_dir=project_dir,
                    returncode=proc.returncode,
                    timed_out=timed_out,
                    timeout_s=batch.timeout_s,
                    elapsed_s=elapsed,
                    log_tail=log_tail,
                    batch_dir=batch_dir,
                )
            )

    async def _wait(self, proc: asyncio.subprocess.Process, timeout_s: float) -> bool:
        """Wait for the run; on timeout interrupt it so Playwright reports what finished.

        The SIGINT goes to the Playwright runner alone when it can be found: signalled
        too, the AppWright and npx processes above it die at once, and the runner, its
        output pipe gone, then exits without writing its report.
        """
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            runners = [
                pid
                for pid in _process_group.members(proc.pid)
                if _is_playwright_runner(_process_group.command_line(pid))
            ]
            _process_group.send(proc.pid, signal.SIGINT, only=runners)

            def interrupted() -> bool:
                if runners:
                    return not any(map(_process_group.running, runners))
                return proc.returncode is not None

            await _process_group.wait_until(interrupted, self.stop_grace_s)
            return True
        return False


def _is_playwright_runner(argv: Sequence[str]) -> bool:
    """Whether *argv* is ``node …/playwright test …`` (or ``…/playwright/cli.js test``)."""
    return any(
        "playwright" in arg and Path(arg).name in ("playwright", "cli.js") and following == "test"
        for arg, following in itertools.pairwise(argv)
    )


def _refusal(job: BatchJob, batch_build: str | None, project_dir: Path) -> str | None:
    if _WHITESPACE.search(job.test_path):
        return (
            f"spec path {job.test_path!r} contains whitespace; AppWright splits its "
            "arguments on spaces, so it cannot run it"
        )
    if job.build and job.build != batch_build:
        return f"job build {job.build!r} differs from the batch's build {batch_build!r}"
    spec = project_dir / job.test_path
    if not spec.is_file():
        return f"spec file not found: {spec}"
    return None


def _check_project_name(slot: SlotSpec) -> None:
    if _WHITESPACE.search(slot.name):
        raise InfrastructureError(
            f"slot name {slot.name!r} contains whitespace; AppWright splits its arguments "
            "on spaces, so it cannot be a project name"
        )


def _reason(exc: InfrastructureError | OSError) -> str:
    if isinstance(exc, InfrastructureError):
        return exc.message
    return f"cannot prepare the run: {exc}"


async def _finish_all(reporter: BatchReporter, jobs: Sequence[BatchJob], reason: str) -> None:
    for job in jobs:
        await reporter.finished(outcome(job, "error", reason, 0.0))


def _environment(paths: ConfigPaths) -> Mapping[str, str]:
    return {
        **os.environ,
        "PLAYWRIGHT_HTML_OPEN": "never",
        "PLAYWRIGHT_JSON_OUTPUT_FILE": str(paths.json_report),
        "PLAYWRIGHT_JUNIT_OUTPUT_FILE": str(paths.junit_report),
    }
