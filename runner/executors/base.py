"""What the runner asks of an executor, and what an executor tells it back.

An executor installs an app build for a device slot and runs a batch of jobs (specs of
one app version) on it, reporting each job's start and outcome as they happen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol
from uuid import UUID

import attrs

from ledger.errors import InfrastructureError
from ledger.events import CaseResult

__all__ = [
    "OUTPUT_LIMIT",
    "Batch",
    "BatchJob",
    "BatchReporter",
    "Executor",
    "InfrastructureError",
    "Outcome",
    "OutcomeStatus",
    "SlotSpec",
    "Target",
    "tail",
]

Target = Literal["emulator", "device", "browserstack"]
#: ``failed``: a test failed; ``error``: the infrastructure failed before a verdict.
OutcomeStatus = Literal["passed", "failed", "error", "timed_out"]

#: How much of a job's output an Outcome keeps, in characters (the end is kept).
OUTPUT_LIMIT = 4096


def tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The last *limit* characters of *text*."""
    return text[-limit:] if len(text) > limit else text


@attrs.frozen(kw_only=True)
class SlotSpec:
    """The device slot a batch runs on."""

    #: Unique on its host; the AppWright project name, so it must not contain spaces.
    name: str
    #: The kind of device.
    target: Target
    #: What the device is, e.g. ``{"platform": "android", "device": "Pixel 8",
    #: "os_version": "14"}``; the three of those are what a job may ask for (AppWright's
    #: ``osVersion`` and ``device_name`` are read as the same), any other key is passed on
    #: to the executor.
    capabilities: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def platform(self) -> str | None:
        platform = self.capabilities.get("platform")
        return platform.lower() if platform else None

    @property
    def device(self) -> str | None:
        caps = self.capabilities
        return caps.get("device") or caps.get("device_name")

    @property
    def os_version(self) -> str | None:
        caps = self.capabilities
        return caps.get("os_version") or caps.get("osVersion")

    @property
    def kind(self) -> tuple[str, str | None, str | None, str | None]:
        """What the slot offers a job: slots of one kind can take the same jobs."""
        return (self.target, self.platform, self.device, self.os_version)

    def describe(self) -> str:
        """The target and what the slot offers, for people: ``emulator, android Pixel 8 14``."""
        offers = " ".join(o for o in (self.platform, self.device, self.os_version) if o)
        return f"{self.target}, {offers}" if offers else self.target


@attrs.frozen(kw_only=True)
class BatchJob:
    """One job attempt in a batch."""

    job_id: UUID
    #: The spec file, relative to the AppWright project directory.
    test_path: str
    #: The job's own build (a local path, a URL or a ``bs://`` id), if it gave one; an
    #: uploaded build arrives as the local path it was fetched to.
    build: str | None = None
    #: 1 for the first attempt.
    attempt: int = 1


@attrs.frozen(kw_only=True)
class Batch:
    """Jobs of one app version, run together on one slot."""

    slot: SlotSpec
    app_version_id: str
    jobs: tuple[BatchJob, ...]
    #: Run timeout for the whole batch, in seconds.
    timeout_s: float
    #: The unpacked test bundle the specs run from; None: the executor's own project.
    project_dir: Path | None = None


@attrs.frozen(kw_only=True)
class Outcome:
    """How one job of a batch ended."""

    job_id: UUID
    status: OutcomeStatus
    #: One line for people: what happened and, when it did not pass, why.
    message: str
    duration_s: float
    #: The end of the job's output (at most OUTPUT_LIMIT characters).
    output: str = ""
    #: Each test case of the job's spec, when the executor can tell them apart.
    tests: tuple[CaseResult, ...] = ()


class BatchReporter(Protocol):
    """Receives a batch's progress; the runner turns it into ledger events."""

    async def started(self, job_id: UUID) -> None: ...

    async def finished(self, outcome: Outcome) -> None: ...


class Executor(Protocol):
    """Runs batches on device slots.

    ``run`` reports ``finished`` exactly once for every job of the batch, unless the
    task is cancelled. ``started`` comes first for every job that began running; a job
    that never began (refused before the process started, or still waiting when the
    batch timed out) gets only ``finished``, with status ``error`` or ``timed_out``.
    On cancellation ``run`` kills what it started within two seconds and re-raises.
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_dependencies(self) -> bool:
        """Whether a test bundle's npm dependencies must be installed before it runs."""
        ...

    async def install(self, slot: SlotSpec, app_version_id: str, build: str | None) -> str | None:
        """Make the build available to the slot.

        Returns the build reference worth remembering (e.g. a ``bs://`` id), or None.
        Raises InfrastructureError, with a message naming what is wrong, when the build
        cannot be used.
        """
        ...

    async def run(self, batch: Batch, reporter: BatchReporter) -> None: ...
