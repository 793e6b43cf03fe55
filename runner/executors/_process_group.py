"""Child processes that run in a process group of their own, and stopping that group.

AppWright starts npx, which starts node, which starts Playwright, its workers and
Appium: killing only the direct child would leave the rest running (and Appium holding
its port). So a run gets its own session, and stopping it means stopping the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "command_line",
    "group_alive",
    "kill_group",
    "members",
    "running",
    "send",
    "spawn",
    "stop_group",
    "wait_until",
]

_POLL_S = 0.05
#: How long to wait for the kernel to finish off a SIGKILLed group.
_KILL_WAIT_S = 1.0
_PROC = Path("/proc")
_DEAD = ("Z", "X")


async def spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: IO[bytes]
) -> asyncio.subprocess.Process:
    """Start *argv* as the leader of a new process group, output to *log*."""
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs.

    Zombies do not count: an orphan is reparented to PID 1, and in a container PID 1
    may never reap it, so "the group still exists" is not the question to ask.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _PROC.is_dir() or bool(members(pgid))


def members(pgid: int) -> list[int]:
    """The running (not zombie) processes of the group; empty where /proc is missing."""
    if not _PROC.is_dir():
        return []
    with os.scandir(_PROC) as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    return [
        pid
        for pid in pids
        if (fields := _stat(pid)) and int(fields[2]) == pgid and fields[0] not in _DEAD
    ]


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in _DEAD


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command: state, ppid, pgrp, ..."""
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    # The command, in parentheses, may itself hold spaces or ")".
    return stat[stat.rindex(")") + 2 :].split()


def command_line(pid: int) -> list[str]:
    """The process's argv, or [] if it is gone."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group, now."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll *condition* until it holds (True) or *timeout_s* passes (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


def send(pgid: int, sig: signal.Signals, *, only: Sequence[int] = ()) -> None:
    """Send *sig* to every process of the group, or to its processes *only*."""
    if not only:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    for pid in only:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def stop_group(pgid: int, sig: signal.Signals, grace_s: float) -> None:
    """Send *sig* to the group, give it *grace_s* to exit, then SIGKILL what is left."""
    if not group_alive(pgid):
        return
    send(pgid, sig)
    if await wait_until(lambda: not group_alive(pgid), grace_s):
        return
    kill_group(pgid)
    await wait_until(lambda: not group_alive(pgid), _KILL_WAIT_S)
