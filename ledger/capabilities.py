"""What a job may need of a device, and what its build says about that.

A job may state a platform, a device model and an OS version; a device slot offers
capabilities (runner/executors/base.py); a slot serves a job when it meets every need
the job states (``slot_serves_v1`` in migrations/040_open_jobs.sql, the one definition
of the match). A job that states no platform needs the one its build's file suffix
names, if it names one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from pathlib import PurePosixPath

import attrs
from attrs import field

__all__ = [
    "DEVICE_PATTERN",
    "OS_VERSION_PATTERN",
    "DeviceProfile",
    "Platform",
    "platform_of_build",
]

#: What a device model and an OS version look like (the OpenAPI document states them).
DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,99}$"
OS_VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$"
_DEVICE = re.compile(DEVICE_PATTERN)
_OS_VERSION = re.compile(OS_VERSION_PATTERN)


class Platform(enum.StrEnum):
    ANDROID = "android"
    IOS = "ios"


_PLATFORM_BY_SUFFIX = {
    ".apk": Platform.ANDROID,
    ".aab": Platform.ANDROID,
    ".ipa": Platform.IOS,
    ".app": Platform.IOS,
}


def platform_of_build(build: str | None) -> Platform | None:
    """The platform a build's file suffix names (a URL's query left aside), or None."""
    if not build:
        return None
    return _PLATFORM_BY_SUFFIX.get(PurePosixPath(build.split("?", 1)[0]).suffix.lower())


_Validator = Callable[[object, "attrs.Attribute[str | None]", "str | None"], None]


def _matches(pattern: re.Pattern[str], what: str) -> _Validator:
    def check(_instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and not pattern.match(value):
            raise ValueError(f"'{attribute.name}' must be {what} (got {value!r})")

    return check


#: A device model name: letters, digits, spaces and ._()+-, at most 100.
device_name = _matches(_DEVICE, "a device name of letters, digits, spaces and ._()+-, at most 100")
#: An OS version (or its first components): "14", "17.2".
os_version = _matches(_OS_VERSION, "an OS version such as 14 or 17.2")


@attrs.frozen(kw_only=True)
class DeviceProfile:
    """One kind of device a suite runs on: a device matrix has several."""

    platform: Platform | None = None
    device: str | None = field(default=None, validator=device_name)
    os_version: str | None = field(default=None, validator=os_version)

    def label(self) -> str:
        """For people and group keys: ``platform=android,device=Pixel 8,os_version=14``."""
        stated = {"platform": self.platform, "device": self.device, "os_version": self.os_version}
        return ",".join(f"{name}={value}" for name, value in stated.items() if value)
