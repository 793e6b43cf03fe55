"""What an agent runs: its slots, its executor and its timings, from TOML or flags.

A config file looks like this (every key but ``slots`` is optional)::

    name = "lab-host-1"            # unique per agent; the default is the host name
    executor = "simulated"         # or "appwright"
    cache_dir = "/var/cache/qgjob" # fetched bundles and builds, and their npm installs

    [[slots]]
    name = "pixel-8"               # unique on the agent; the AppWright project name
    target = "emulator"            # emulator, device or browserstack
    # What a job may ask for: platform (android, ios), device and os_version; other keys
    # go to the executor (e.g. udid, orientation, appBundleId).
    capabilities = { platform = "android", os_version = "14", device = "Pixel 8" }

    [simulated]                    # runner.executors.SimulatedExecutor's options
    test_s = 0.5

    [appwright]                    # runner.executors.AppWrightExecutor's options
    project_dir = "/srv/e2e"
    build_template = "builds/{app_version_id}.apk"
    work_dir = "/var/lib/qgjob/runs"
    browserstack_upload_url = "https://api-cloud.browserstack.com/app-automate/upload"

    [policy]                       # runner.policy.ClaimPolicy
    ageing_per_s = 0.0033

    [org_limits]                   # slots an org may occupy at once, across all agents
    acme = 2
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from attrs import validators
from cattrs.v import format_exception

from ledger.capabilities import Platform
from ledger.errors import QgjobError
from runner.executors import AppWrightExecutor, Executor, SimulatedExecutor, SlotSpec
from runner.policy import ClaimPolicy

__all__ = [
    "AgentConfig",
    "ConfigError",
    "RetryPolicy",
    "build_config",
    "load_config",
    "make_executor",
    "read_toml",
    "slots_from_spec",
]

ExecutorName = Literal["simulated", "appwright"]
TARGETS = ("emulator", "device", "browserstack")
PLATFORMS = tuple(platform.value for platform in Platform)
_positive = validators.gt(0.0)


def _default_cache_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "qgjob"


class ConfigError(QgjobError):
    """The runner's configuration is not valid."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When a failed attempt is tried again."""

    #: Attempts an infrastructure error may use, when the job allows fewer.
    infra_attempts: int = attrs.field(default=3, validator=validators.ge(1))
    #: The first retry's delay; each further one doubles it, with ±50 % jitter.
    backoff_s: float = attrs.field(default=2.0, validator=validators.ge(0))
    #: The longest delay.
    backoff_cap_s: float = attrs.field(default=300.0, validator=validators.ge(0))


def _unique_slot_names(
    _instance: object, _attribute: attrs.Attribute[Any], slots: tuple[SlotSpec, ...]
) -> None:
    names = [slot.name for slot in slots]
    if not slots:
        raise ValueError("an agent needs at least one slot")
    if len(set(names)) != len(names):
        raise ValueError(f"slot names must be unique on an agent: {names}")
    for slot in slots:
        if slot.target not in TARGETS:
            raise ValueError(f"slot {slot.name!r}: target must be one of {', '.join(TARGETS)}")


@attrs.frozen(kw_only=True)
class AgentConfig:
    """One agent process: the device slots it hosts and how it runs them."""

    #: Unique among agents; device ids derive from it and the slot names, so keep it
    #: stable across restarts. A new process of a name supersedes the older one.
    name: str = attrs.field(factory=socket.gethostname)
    slots: tuple[SlotSpec, ...] = attrs.field(validator=_unique_slot_names)
    executor: ExecutorName = "simulated"
    #: Options for the executor (see runner.executors).
    simulated: Mapping[str, Any] = attrs.field(factory=dict)
    appwright: Mapping[str, Any] = attrs.field(factory=dict)
    policy: ClaimPolicy = attrs.field(factory=ClaimPolicy)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: Max slots per org, written to the shared org_limits table at start.
    org_limits: Mapping[str, int] = attrs.field(factory=dict)
    #: A job's run timeout when it sets none, in seconds.
    default_timeout_s: float = attrs.field(default=900.0, validator=_positive)
    #: How long the lease lasts without renewal; it is renewed every third of it.
    lease_ttl_s: float = attrs.field(default=10.0, validator=_positive)
    #: How often lapsed leases and queue timeouts are looked for.
    maintenance_interval_s: float = attrs.field(default=1.0, validator=_positive)
    #: An idle slot of each target looks at the queue about this often, notification or
    #: not (jittered by ±50 %). Only a lost notification waits for it (retries that fall
    #: due are notified by the fleet's maintenance); every agent's poll is a claim, so a
    #: short one costs a fleet dear (docs/scaling.md).
    poll_interval_s: float = attrs.field(default=10.0, validator=_positive)
    #: Running jobs are checked for cancellation at least this often.
    cancel_poll_s: float = attrs.field(default=0.5, validator=_positive)
    #: On SIGTERM, how long the current test may still take before it is stopped too.
    drain_timeout_s: float = attrs.field(default=60.0, validator=validators.ge(0))
    #: Extra time beyond a batch's run timeout before the runner kills the executor
    #: itself (the executor enforces the timeout first).
    kill_grace_s: float = attrs.field(default=60.0, validator=validators.ge(0))
    #: Where the test bundles and builds jobs name are fetched to, shared by the agents
    #: of one host (runner/blob_cache.py).
    cache_dir: Path = attrs.field(factory=_default_cache_dir, converter=Path)
    #: How long a BrowserStack upload is reused: BrowserStack deletes an app 30 days
    #: after its upload, and a day less leaves the last batch that reuses it time to run.
    upload_lifetime_s: float = attrs.field(
        default=dt.timedelta(days=29).total_seconds(), validator=_positive
    )


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(
    SlotSpec,
    lambda data, _: SlotSpec(
        name=data["name"], target=data["target"], capabilities=dict(data.get("capabilities", {}))
    ),
)


def slots_from_spec(spec: str) -> tuple[SlotSpec, ...]:
    """Slots from ``"emulator:2,emulator/ios:1,device:1"``: TARGET[/PLATFORM][:COUNT].

    Slots are named ``emulator-1``, ``emulator-ios-1`` and so on; a platform given makes it
    the slots' ``platform`` capability.
    """
    slots: list[SlotSpec] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, count = item.partition(":")
        target, _, platform = kind.partition("/")
        known = target in TARGETS and platform in ("", *PLATFORMS)
        if not known or not (count or "1").isdigit():
            raise ConfigError(
                f"bad slot spec {item!r}: use TARGET[/PLATFORM][:COUNT] with TARGET one of "
                f"{', '.join(TARGETS)} and PLATFORM one of {', '.join(PLATFORMS)}"
            )
        prefix = f"{target}-{platform}" if platform else target
        capabilities = {"platform": platform} if platform else {}
        for index in range(1, int(count or "1") + 1):
            slots.append(
                SlotSpec(name=f"{prefix}-{index}", target=target, capabilities=capabilities)  # type: ignore[arg-type]
            )
    return tuple(slots)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read runner config {path}: {error}") from error


def load_config(path: Path) -> AgentConfig:
    """Read a TOML config file."""
    return build_config(read_toml(path), source=str(path))


def build_config(data: Mapping[str, Any], *, source: str = "flags") -> AgentConfig:
    """An AgentConfig from plain data, with errors that name the offending key."""
    try:
        config = _converter.structure(dict(data), AgentConfig)
        make_executor(config)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as error:
        detail = (
            "; ".join(cattrs.transform_error(error, format_exception=_describe))
            if isinstance(error, cattrs.BaseValidationError)
            else str(error)
        )
        raise ConfigError(f"invalid runner config ({source}): {detail}") from error
    return config


def _describe(error: BaseException, expected: type | None) -> str:
    # A validator's ValueError names the field and the rule ("'lease_ttl_s' must be > 0").
    if isinstance(error, ValueError):
        return str(error)
    return format_exception(error, expected)


def make_executor(config: AgentConfig) -> Executor:
    """The configured executor; raises ValueError naming a bad option."""
    if config.executor == "simulated":
        return SimulatedExecutor.from_options(config.simulated)
    options = dict(config.appwright)
    if "project_dir" not in options or "work_dir" not in options:
        raise ValueError("the appwright executor needs appwright.project_dir and .work_dir")
    return AppWrightExecutor(**options)
