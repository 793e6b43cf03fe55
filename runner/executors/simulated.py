"""The simulated executor: no devices, no AppWright, only believable timings and verdicts.

It is the default on a machine without devices, for the demo, the end-to-end tests and
the benchmarks. Every outcome it reports says "simulated". Verdicts are deterministic
per (seed, job, attempt):

- with probability ``failure_rate`` a job's test is broken and fails every attempt;
- otherwise, with probability ``flake_rate``, it is flaky: it fails attempt 1 only;
- a spec path containing "fail" (any case) always fails;
- a spec path containing "infra" (any case) always errors, as a device that breaks does:
  an infrastructure error, not a test failure.

A batch gets ``timeout_s`` simulated seconds: jobs that would end later time out.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import attrs
from attrs import validators

from ledger.events import CaseError, CaseResult, CaseStatus

from .base import Batch, BatchJob, BatchReporter, Outcome, OutcomeStatus, SlotSpec

__all__ = ["SimulatedExecutor"]

#: The one test case a simulated spec holds.
_CASE_TITLE = "simulated test"
_rate = [validators.instance_of(float), validators.ge(0.0), validators.le(1.0)]
_duration = [validators.instance_of(float), validators.ge(0.0)]


def _unit(seed: int, job_id: UUID, draw: str) -> float:
    """A number in [0, 1) fixed by its arguments."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@attrs.frozen(kw_only=True)
class SimulatedExecutor:
    """Pretends to install apps and run tests (simulated: nothing really runs)."""

    #: Simulated seconds to install (or upload) a build.
    install_s: float = attrs.field(default=2.0, converter=float, validator=_duration)
    #: Simulated seconds one test takes.
    test_s: float = attrs.field(default=5.0, converter=float, validator=_duration)
    #: Share of jobs whose test fails on every attempt.
    failure_rate: float = attrs.field(default=0.0, converter=float, validator=_rate)
    #: Share of jobs whose test fails on attempt 1 only.
    flake_rate: float = attrs.field(default=0.0, converter=float, validator=_rate)
    #: Same seed, same verdicts.
    seed: int = attrs.field(default=0, converter=int)
    #: Real seconds slept per simulated second; 0 never sleeps (benchmarks).
    time_scale: float = attrs.field(default=1.0, converter=float, validator=_duration)

    name = "simulated"
    #: Nothing runs from a bundle, so nothing is installed for one.
    needs_dependencies = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SimulatedExecutor:
        """Build from strings or numbers, e.g. ``{"test_s": "0.5", "seed": "7"}``.

        Raises ValueError naming an unknown or malformed option.
        """
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown simulated executor option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad simulated executor option: {exc}") from exc

    @classmethod
    def from_spec(cls, spec: str) -> SimulatedExecutor:
        """Build from ``"key=value,key=value"``, e.g. ``"test_s=0.5,failure_rate=0.1"``."""
        options: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"simulated executor option {item!r} is not key=value")
            options[key.strip()] = value.strip()
        return cls.from_options(options)

    async def install(self, slot: SlotSpec, app_version_id: str, build: str | None) -> str | None:
        """Take install_s; on BrowserStack, "upload" once and return a simulated bs:// id."""
        if slot.target == "browserstack" and build and build.startswith("bs://"):
            return build
        await self._sleep(self.install_s)
        if slot.target == "browserstack":
            digest = hashlib.sha256(app_version_id.encode()).hexdigest()[:16]
            return f"bs://simulated-{digest}"
        return None

    async def run(self, batch: Batch, reporter: BatchReporter) -> None:
        """Run the jobs one after another, test_s each, within the batch's timeout."""
        budget = batch.timeout_s
        for job in batch.jobs:
            if budget <= 0:
                await reporter.finished(self._timed_out(job, 0.0, batch.timeout_s))
                continue
            await reporter.started(job.job_id)
            if self.test_s > budget:
                await self._sleep(budget)
                await reporter.finished(self._timed_out(job, budget, batch.timeout_s))
                budget = 0.0
                continue
            await self._sleep(self.test_s)
            budget -= self.test_s
            await reporter.finished(self._verdict(job))

    def _verdict(self, job: BatchJob) -> Outcome:
        status: OutcomeStatus = "passed"
        if "infra" in job.test_path.lower():
            return Outcome(
                job_id=job.job_id,
                status="error",
                message="simulated: the device went offline (spec path contains 'infra')",
                duration_s=self.test_s,
                output=f"[simulated] {job.test_path} attempt {job.attempt}: device offline\n",
            )
        if "fail" in job.test_path.lower():
            status, why = "failed", "spec path contains 'fail'"
        elif _unit(self.seed, job.job_id, "failure") < self.failure_rate:
            status, why = "failed", "broken test (failure_rate)"
        elif job.attempt == 1 and _unit(self.seed, job.job_id, "flake") < self.flake_rate:
            status, why = "failed", "flaky test, fails on attempt 1 (flake_rate)"
        message = "simulated: passed" if status == "passed" else f"simulated: failed, {why}"
        case = CaseResult(
            file=job.test_path,
            title_path=(_CASE_TITLE,),
            status=CaseStatus.PASSED if status == "passed" else CaseStatus.FAILED,
            line=1,
            duration_s=self.test_s,
            error=None
            if status == "passed"
            else CaseError(message=message, file=job.test_path, line=1),
        )
        return Outcome(
            job_id=job.job_id,
            status=status,
            message=message,
            duration_s=self.test_s,
            output=f"[simulated] {job.test_path} attempt {job.attempt}: {status}\n",
            tests=(case,),
        )

    def _timed_out(self, job: BatchJob, duration_s: float, timeout_s: float) -> Outcome:
        return Outcome(
            job_id=job.job_id,
            status="timed_out",
            message=f"simulated: timed out, the batch ran past its {timeout_s:g} s limit",
            duration_s=duration_s,
            output=f"[simulated] {job.test_path} attempt {job.attempt}: timed out\n",
        )

    async def _sleep(self, simulated_s: float) -> None:
        # Even at time_scale 0, yield once so the loop (and a cancellation) can run.
        await asyncio.sleep(simulated_s * self.time_scale)
