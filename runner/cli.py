"""``qgjobd runner``: the agent's command line, on top of a TOML file or on its own."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import attrs

from runner.config import AgentConfig, ConfigError, build_config, read_toml, slots_from_spec
from runner.executors import SimulatedExecutor

__all__ = ["add_arguments", "config_from_args"]

_log = logging.getLogger(__name__)

# Flags that set a top-level key of the config, and that key.
_TOP_LEVEL = {
    "name": "name",
    "executor": "executor",
    "lease_ttl": "lease_ttl_s",
    "poll_interval": "poll_interval_s",
    "default_timeout": "default_timeout_s",
    "drain_timeout": "drain_timeout_s",
    "cache_dir": "cache_dir",
}
_POLICY = {"ageing_per_s": "ageing_per_s", "min_batch": "min_batch", "max_batch": "max_batch"}
_APPWRIGHT = {
    "appwright_project": "project_dir",
    "build_template": "build_template",
    "work_dir": "work_dir",
    "npx": "npx",
    "browserstack_upload_url": "browserstack_upload_url",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML file (see runner/config.py)")
    parser.add_argument("--name", help="the agent's name, unique and stable (default: host name)")
    parser.add_argument(
        "--slots",
        help="slots as TARGET[/PLATFORM][:COUNT], e.g. emulator:2,emulator/ios:1,device/android:1",
    )
    parser.add_argument("--executor", choices=["simulated", "appwright"])
    parser.add_argument(
        "--simulated",
        metavar="OPTIONS",
        help="simulated executor options, e.g. test_s=0.5,install_s=2,failure_rate=0.1,"
        "flake_rate=0.05,seed=7,time_scale=0.1",
    )
    parser.add_argument("--appwright-project", metavar="DIR", help="the AppWright project")
    parser.add_argument(
        "--build-template", help="a build path for app versions, e.g. builds/{app_version_id}.apk"
    )
    parser.add_argument("--work-dir", metavar="DIR", help="where AppWright run outputs are kept")
    parser.add_argument("--npx", help="the npx executable (default: npx)")
    parser.add_argument(
        "--browserstack-upload-url",
        metavar="URL",
        help="where builds are uploaded for BrowserStack slots (BrowserStack's own by default)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where fetched test bundles and builds are kept (default: ~/.cache/qgjob)",
    )
    parser.add_argument(
        "--org-limit",
        action="append",
        default=[],
        metavar="ORG=N",
        help="at most N slots for ORG at once, across all agents (repeatable)",
    )
    parser.add_argument("--lease-ttl", type=float, metavar="S", help="lease lifetime (10)")
    parser.add_argument("--poll-interval", type=float, metavar="S", help="idle poll (10)")
    parser.add_argument("--default-timeout", type=float, metavar="S", help="run timeout (900)")
    parser.add_argument("--drain-timeout", type=float, metavar="S", help="SIGTERM grace (60)")
    parser.add_argument("--ageing-per-s", type=float, help="priority points gained per second")
    parser.add_argument("--min-batch", type=int, help="smallest batch worth an install (16)")
    parser.add_argument("--max-batch", type=int, help="largest batch one claim takes (100)")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The config file (if any) with the flags given on top; raises ConfigError.

    A flag replaces its key; ``--simulated`` replaces the whole ``[simulated]`` table.
    """
    data: dict[str, Any] = read_toml(args.config) if args.config is not None else {}
    for flag, key in _TOP_LEVEL.items():
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.slots:
        data["slots"] = [
            {"name": s.name, "target": s.target, "capabilities": dict(s.capabilities)}
            for s in slots_from_spec(args.slots)
        ]
    if args.simulated:
        try:
            data["simulated"] = attrs.asdict(SimulatedExecutor.from_spec(args.simulated))
        except ValueError as error:
            raise ConfigError(f"--simulated: {error}") from error
    for section, flags in (("policy", _POLICY), ("appwright", _APPWRIGHT)):
        for flag, key in flags.items():
            if getattr(args, flag) is not None:
                data[section] = {**data.get(section, {}), key: getattr(args, flag)}
    for item in args.org_limit:
        data["org_limits"] = {**data.get("org_limits", {}), **dict([_org_limit(item)])}
    if "slots" not in data:
        raise ConfigError("give --slots or a --config file with [[slots]]")
    return build_config(data, source=str(args.config or "flags"))


def _org_limit(item: str) -> tuple[str, int]:
    org_id, sep, count = item.partition("=")
    if not sep or not count.isdigit():
        raise ConfigError(f"--org-limit {item!r}: use ORG=N")
    return org_id, int(count)
