"""The event types: every fact the ledger can record.

Jobs, groups and devices are streams; each event belongs to one stream. Events
are plain frozen data: what happened, never how to store it (that is
ledger/codec.py) or whether it may happen (that is ledger/decisions.py).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Any
from uuid import UUID

import attrs
from attrs import field, validators

from ledger.capabilities import DeviceProfile, Platform, device_name, os_version

__all__ = [
    "ALL_EVENT_TYPES",
    "DEVICE_EVENTS",
    "JOB_EVENTS",
    "MAX_CASES",
    "NAME_PATTERN",
    "PRIORITY_DEFAULT",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "AppInstalled",
    "BuildUploaded",
    "CaseError",
    "CaseResult",
    "CaseStatus",
    "DeviceHeartbeat",
    "DeviceRegistered",
    "DeviceRetired",
    "Event",
    "FailureKind",
    "JobAssigned",
    "JobCancelled",
    "JobFailed",
    "JobGrouped",
    "JobLeaseExpired",
    "JobPassed",
    "JobRetryScheduled",
    "JobStarted",
    "JobSubmitted",
    "JobTimedOut",
    "Metadata",
    "Target",
    "TimeoutKind",
]

PRIORITY_MIN, PRIORITY_DEFAULT, PRIORITY_MAX = 1, 5, 10
#: What an organisation or app version id looks like.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
_NAME = re.compile(NAME_PATTERN)
_BLOB_REFERENCE = re.compile(r"^sha256:[0-9a-f]{64}$")


class Target(enum.StrEnum):
    """The kind of device a test runs on."""

    EMULATOR = "emulator"
    DEVICE = "device"
    BROWSERSTACK = "browserstack"


class FailureKind(enum.StrEnum):
    #: The tests ran and at least one failed.
    TEST = "test"
    #: The device, the build or the executor failed before a verdict.
    INFRASTRUCTURE = "infrastructure"


class CaseStatus(enum.StrEnum):
    """How one test case of a spec file ended within an attempt."""

    PASSED = "passed"
    FAILED = "failed"
    #: Failed, then passed on one of the test runner's own retries.
    FLAKY = "flaky"
    #: Skipped on purpose, or never reached because the run was cut short.
    SKIPPED = "skipped"
    #: Running when the run was cut short (a timeout), so it has no verdict.
    INTERRUPTED = "interrupted"


class TimeoutKind(enum.StrEnum):
    #: The job waited in the queue longer than it allowed.
    QUEUE = "queue"
    #: The job ran longer than it allowed and was killed.
    RUN = "run"


def _name(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(
            f"'{attribute.name}' must be 1 to 200 letters, digits or ._:/@+- "
            f"starting with a letter or digit (got {value!r})"
        )


def _blob_reference(
    _instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and not _BLOB_REFERENCE.match(value):
        raise ValueError(
            f"'{attribute.name}' must name an uploaded blob as sha256:<64 lowercase hex "
            f"digits> (got {value[:100]!r})"
        )


_text = validators.and_(validators.instance_of(str), validators.max_len(4096))
_positive = validators.gt(0)


def _optional_text(max_len: int) -> Any:
    return validators.optional(validators.max_len(max_len))


@attrs.frozen(kw_only=True)
class Metadata:
    """Who caused an event and why; stored beside every event."""

    #: The organisation the event belongs to; scopes every read.
    org_id: str
    #: Who wrote it: "api", "projector", "runner:<agent>", "cli", ...
    actor: str
    #: Ties together every event caused by one user action (e.g. one submit).
    correlation_id: UUID | None = None
    #: The event (position) or request that directly caused this one.
    causation_id: str | None = None
    #: The HTTP request id, when the event came in through the API.
    request_id: str | None = None


@attrs.frozen(kw_only=True)
class CaseError:
    """Why a test case failed, and where."""

    #: The failure's first lines, without terminal colours.
    message: str = field(validator=_text)
    #: The file the failure points at, relative to the test project; the test's own file
    #: when the report gives no location.
    file: str = field(validator=validators.max_len(1024))
    line: int | None = None


@attrs.frozen(kw_only=True)
class CaseResult:
    """One test case (one ``test()``) of an attempt, as the test report gives it."""

    #: The spec file, relative to the test project, as the job's test_path is.
    file: str = field(validator=validators.max_len(1024))
    #: The describe blocks' titles, outermost first, then the test's own title.
    title_path: tuple[str, ...] = field(
        validator=validators.and_(validators.min_len(1), validators.max_len(32))
    )
    status: CaseStatus
    #: The line the test is declared on.
    line: int | None = None
    #: Of all its tries within the attempt.
    duration_s: float = 0.0
    #: The test runner's own retries used within the attempt (0: it ended on its first try).
    retry: int = field(default=0, validator=validators.ge(0))
    #: The last failure of a failed or flaky test.
    error: CaseError | None = None

    @property
    def title(self) -> str:
        return " > ".join(self.title_path)


#: At most this many test cases are kept per attempt.
MAX_CASES = 2000


# ---- job stream ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class JobSubmitted:
    """A user asked for one test to run against one app build."""

    #: The organisation that owns the job.
    org_id: str = field(validator=_name)
    #: The app build under test; jobs of one build share a device install.
    app_version_id: str = field(validator=_name)
    #: The AppWright spec to run, relative to the test project.
    test_path: str = field(validator=validators.and_(_text, validators.min_len(1)))
    #: Which kind of device runs it.
    target: Target
    #: What it needs of the device (ledger/capabilities.py); absent: anything of its
    #: target. The API fills in the platform a build's suffix names.
    platform: Platform | None = None
    #: A device model, e.g. "Pixel 8" (compared without case).
    device: str | None = field(default=None, validator=device_name)
    #: An OS version prefix: "14" is met by 14 and 14.1.
    os_version: str | None = field(default=None, validator=os_version)
    #: 1 (lowest) to 10 (highest); higher runs first, and waiting raises it further.
    priority: int = field(
        default=PRIORITY_DEFAULT,
        validator=[validators.ge(PRIORITY_MIN), validators.le(PRIORITY_MAX)],
    )
    #: Where the app binary is: a path, a URL or a BrowserStack ``bs://`` id.
    build: str | None = field(default=None, validator=_optional_text(2048))
    #: The repository and commit the test run belongs to, for people and grouping.
    repo: str | None = field(default=None, validator=_optional_text(512))
    commit: str | None = field(default=None, validator=_optional_text(128))
    #: Free labels; the ``tag`` grouping strategy uses the first one.
    tags: tuple[str, ...] = field(default=(), validator=validators.max_len(32))
    #: The suite (run) this job was submitted with, if any.
    run_id: UUID | None = None
    #: How many attempts a test failure may use; infrastructure errors are retried regardless.
    max_attempts: int = field(default=1, validator=[_positive, validators.le(10)])
    #: Run timeout in seconds; the runner's default when absent.
    timeout_s: float | None = field(default=None, validator=validators.optional(_positive))
    #: How long the job may wait to start before it times out; no limit when absent.
    queue_timeout_s: float | None = field(default=None, validator=validators.optional(_positive))
    #: A newer run with the same key may cancel this job's run while it is unfinished,
    #: as a newer push to a branch supersedes the older one's tests.
    supersede_key: str | None = field(default=None, validator=validators.optional(_name))
    #: The run this job's run reruns (e.g. only its failed jobs).
    rerun_of: UUID | None = None
    #: The test bundle the specs run from: ``sha256:<hex>`` of an uploaded blob; absent
    #: when the runner's configured project folder holds the specs.
    bundle: str | None = field(default=None, validator=_blob_reference)

    @property
    def profile(self) -> DeviceProfile:
        """What the job needs of the device."""
        return DeviceProfile(platform=self.platform, device=self.device, os_version=self.os_version)


@attrs.frozen(kw_only=True)
class JobGrouped:
    """The grouping strategy put the job in a group."""

    group_id: UUID
    #: The strategy's name and the key it computed.
    strategy: str
    group_key: str


@attrs.frozen(kw_only=True)
class JobAssigned:
    """A device slot claimed the job for one attempt."""

    #: 1 for the first attempt, then one more for each retry.
    attempt: int = field(validator=_positive)
    device_id: UUID
    agent_id: str


@attrs.frozen(kw_only=True)
class JobStarted:
    """The attempt began running; what it runs is recorded beside it, as it ran."""

    attempt: int = field(validator=_positive)
    #: The test bundle the specs ran from (``sha256:<hex>``); absent: the runner's
    #: configured project folder.
    bundle: str | None = None
    #: The build as the device got it: ``sha256:<hex>`` of an uploaded build, a
    #: BrowserStack ``bs://`` id, or the path or URL the job or the runner named.
    build: str | None = None
    #: The slot it ran on, and what that slot is (e.g. ``emulator, android Pixel 8``).
    device_id: UUID | None = None
    device: str | None = None
    #: The agent hosting the slot.
    agent_id: str | None = None


@attrs.frozen(kw_only=True)
class JobPassed:
    attempt: int = field(validator=_positive)
    duration_s: float
    #: The end of the test's output.
    output: str = ""
    #: Each test case of the spec, when the executor's report lists them.
    tests: tuple[CaseResult, ...] = field(default=(), validator=validators.max_len(MAX_CASES))


@attrs.frozen(kw_only=True)
class JobFailed:
    """The attempt failed; final unless a JobRetryScheduled follows."""

    attempt: int = field(validator=_positive)
    kind: FailureKind
    reason: str
    duration_s: float | None = None
    output: str = ""
    #: Each test case of the spec, when the executor's report lists them.
    tests: tuple[CaseResult, ...] = field(default=(), validator=validators.max_len(MAX_CASES))


@attrs.frozen(kw_only=True)
class JobRetryScheduled:
    """The job goes back to the queue for another attempt, not before *not_before*."""

    #: The attempt that failed.
    attempt: int = field(validator=_positive)
    not_before: dt.datetime
    reason: str
    #: The runner handed the attempt back before a verdict (it was draining, or a job of
    #: the same batch was cancelled): no failure precedes it, and the attempt does not
    #: count against the job's limits.
    handed_back: bool = False


@attrs.frozen(kw_only=True)
class JobCancelled:
    reason: str = "cancelled by user"
    #: The attempt that was running when it was cancelled, if one was.
    attempt: int | None = None


@attrs.frozen(kw_only=True)
class JobLeaseExpired:
    """The agent running the attempt stopped renewing its lease; the attempt is void."""

    attempt: int = field(validator=_positive)
    agent_id: str


@attrs.frozen(kw_only=True)
class JobTimedOut:
    kind: TimeoutKind
    reason: str
    attempt: int | None = None


# ---- device stream ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DeviceRegistered:
    """An agent offers a device slot."""

    name: str
    target: Target
    agent_id: str
    #: Free capabilities, e.g. platform, osVersion, device name, udid.
    capabilities: dict[str, str] = field(factory=dict)


@attrs.frozen(kw_only=True)
class DeviceHeartbeat:
    """Kept for audits of long outages; liveness itself is a lease, not an event."""

    agent_id: str


@attrs.frozen(kw_only=True)
class AppInstalled:
    """The app build was installed on the device, once for every job of a batch."""

    app_version_id: str
    #: The group whose batch the install served.
    group_id: UUID | None = None


@attrs.frozen(kw_only=True)
class BuildUploaded:
    """A build was uploaded to a cloud provider for the organisation in the event's
    metadata; later batches of that organisation reuse *reference* until it expires."""

    app_version_id: str
    #: E.g. a BrowserStack ``bs://`` id.
    reference: str
    #: The uploaded build's ``sha256:<hex>``, when the job named one; absent, the upload
    #: stands for the app version's build.
    build: str | None = None
    #: When the provider deletes the upload; absent: never known to expire.
    expires_at: dt.datetime | None = None


@attrs.frozen(kw_only=True)
class DeviceRetired:
    reason: str


JOB_EVENTS: tuple[type, ...] = (
    JobSubmitted,
    JobGrouped,
    JobAssigned,
    JobStarted,
    JobPassed,
    JobFailed,
    JobRetryScheduled,
    JobCancelled,
    JobLeaseExpired,
    JobTimedOut,
)
DEVICE_EVENTS: tuple[type, ...] = (
    DeviceRegistered,
    DeviceHeartbeat,
    AppInstalled,
    BuildUploaded,
    DeviceRetired,
)
ALL_EVENT_TYPES: tuple[type, ...] = JOB_EVENTS + DEVICE_EVENTS

Event = (
    JobSubmitted
    | JobGrouped
    | JobAssigned
    | JobStarted
    | JobPassed
    | JobFailed
    | JobRetryScheduled
    | JobCancelled
    | JobLeaseExpired
    | JobTimedOut
    | DeviceRegistered
    | DeviceHeartbeat
    | AppInstalled
    | BuildUploaded
    | DeviceRetired
)
