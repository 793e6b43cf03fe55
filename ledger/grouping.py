"""Grouping strategies: which group a submitted job joins.

A job is grouped as it is submitted, in the submit's transaction (http_api/submit.py),
and nowhere else. A strategy maps a submitted job to the part of its group key that it
decides; the key always starts with the job's org, target and what it needs of the
device, because a group runs on one kind of device and orgs never share one, and ends
with the job's test bundle, if it names one, because a batch runs from one bundle. A group's
id is a uuid5 of (strategy name, key), so the same key gives the same group in every
API process, across restarts.

Built-in strategies, by name:

- ``app_version`` (the default): one group per app build, so it is installed once;
- ``repo``: one group per repository, jobs without a repo by app build;
- ``tag``: one group per first tag, untagged jobs by app build;
- ``priority``: one group per priority band (low 1-3, normal 4-7, high 8-10).

Any importable callable taking a ``JobSubmitted`` and returning a string is a
strategy too, named ``"package.module:function"``.
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import Callable
from uuid import UUID

import attrs

from ledger.errors import QgjobError
from ledger.events import JobGrouped, JobSubmitted

__all__ = [
    "BUILT_IN",
    "DEFAULT_STRATEGY",
    "GROUPING_ENV",
    "Grouping",
    "KeyFunction",
    "UnknownStrategy",
    "group_id",
    "resolve",
]

#: The environment variable naming the strategy when none is given.
GROUPING_ENV = "QGJOB_GROUPING"
DEFAULT_STRATEGY = "app_version"

KeyFunction = Callable[[JobSubmitted], str]

_log = logging.getLogger(__name__)

# Fixed forever: changing it would move every job to a new group on the next rebuild.
_NAMESPACE = uuid.UUID("5b0f3a52-2f4e-4d63-9d1c-6a1f0c3e7a11")


class UnknownStrategy(QgjobError):
    """No grouping strategy has that name."""


def _app_version(job: JobSubmitted) -> str:
    return f"app_version={job.app_version_id}"


def _repo(job: JobSubmitted) -> str:
    return f"repo={job.repo}" if job.repo else _app_version(job)


def _tag(job: JobSubmitted) -> str:
    return f"tag={job.tags[0]}" if job.tags else _app_version(job)


def _priority(job: JobSubmitted) -> str:
    band = "low" if job.priority <= 3 else "normal" if job.priority <= 7 else "high"
    return f"priority={band}"


BUILT_IN: dict[str, KeyFunction] = {
    "app_version": _app_version,
    "repo": _repo,
    "tag": _tag,
    "priority": _priority,
}


def group_id(strategy: str, key: str) -> uuid.UUID:
    """The group's id: the same for the same strategy and key, everywhere and always."""
    return uuid.uuid5(_NAMESPACE, f"{strategy}\n{key}")


@attrs.frozen(kw_only=True)
class Grouping:
    """A strategy ready to group jobs."""

    #: Recorded on every JobGrouped: a built-in name or ``"module:callable"``.
    name: str
    #: The strategy's own part of the key.
    key_part: KeyFunction

    def key(self, job: JobSubmitted) -> str:
        part = self.key_part(job)
        if not isinstance(part, str):
            raise TypeError(f"grouping strategy {self.name} returned {type(part).__name__}")
        # Org names, targets, device needs and bundle references never contain "|", so
        # the key splits back unambiguously.
        needs = job.profile.label()
        key = f"{job.org_id}|{job.target.value}|{needs}|{part}" if needs else (
            f"{job.org_id}|{job.target.value}|{part}"
        )
        # A batch runs its specs in one AppWright invocation from one directory, so the
        # jobs of a group share their test bundle: two pushes of one app build are two
        # groups (the claim still prefers a slot that has the build installed).
        return f"{key}|bundle={job.bundle}" if job.bundle else key

    def group(self, job: JobSubmitted) -> JobGrouped:
        key = self.key(job)
        return JobGrouped(group_id=group_id(self.name, key), strategy=self.name, group_key=key)

    def group_or_default(self, job: JobSubmitted, job_id: UUID) -> JobGrouped:
        """The job's grouping; by the default strategy (logged) when a custom one fails.

        A broken strategy must not stop the submit, nor leave the job where no slot
        can claim it.
        """
        try:
            return self.group(job)
        except Exception:
            _log.exception(
                "grouping strategy %s failed for job %s; grouping it by %s",
                self.name, job_id, DEFAULT_STRATEGY,
            )
            return resolve(DEFAULT_STRATEGY).group(job)


def resolve(name: str | None = None) -> Grouping:
    """The strategy called *name*, else $QGJOB_GROUPING, else ``app_version``.

    Raises UnknownStrategy, saying what is allowed, for a name that is neither
    built in nor an importable callable.
    """
    name = name or os.environ.get(GROUPING_ENV) or DEFAULT_STRATEGY
    if name in BUILT_IN:
        return Grouping(name=name, key_part=BUILT_IN[name])
    if ":" not in name:
        raise UnknownStrategy(
            f"unknown grouping strategy {name!r}: use one of {', '.join(BUILT_IN)} "
            "or an importable 'module:callable'"
        )
    return Grouping(name=name, key_part=_import(name))


def _import(name: str) -> KeyFunction:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownStrategy(
            f"grouping strategy {name!r}: cannot import {module_name!r} ({error})"
        ) from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UnknownStrategy(
            f"grouping strategy {name!r}: {module_name} has no callable {attribute!r}"
        )
    key_part: KeyFunction = function
    return key_part
