"""Host-level helpers for the embedded cluster: postmaster.pid, pid and socket probes, ownership."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from pathlib import Path

__all__ = [
    "SERVER_USER",
    "accepts",
    "chown_tree",
    "first_line",
    "live_pid",
    "make_traversable",
    "postmaster_lines",
]

# postgres refuses to run as root; as root, the server runs as this system user.
SERVER_USER = "qgjob"


def make_traversable(path: Path) -> None:
    """Add o+x to ``path`` and every directory above it."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def chown_tree(root: Path, account: pwd.struct_passwd) -> None:
    os.chown(root, account.pw_uid, account.pw_gid)
    for parent, directories, files in os.walk(root):
        for name in (*directories, *files):
            os.chown(
                os.path.join(parent, name), account.pw_uid, account.pw_gid, follow_symlinks=False
            )


def postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return [line.strip() for line in (data_dir / "postmaster.pid").read_text().splitlines()]
    except FileNotFoundError:
        return []


def first_line(path: Path) -> str | None:
    try:
        return path.read_text().partition("\n")[0].strip()
    except FileNotFoundError:
        return None


def live_pid(postmaster_lines: list[str]) -> int | None:
    """The postmaster's pid if that process is alive and runs as the server's user."""
    if not postmaster_lines or not postmaster_lines[0].isdigit():
        return None
    pid = int(postmaster_lines[0])
    uid = os.geteuid() if os.geteuid() != 0 else _existing_uid(SERVER_USER)
    if uid is None or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    if not Path("/proc/self").exists():
        return pid  # no procfs (macOS): the signal check is all there is
    try:
        owner = Path(f"/proc/{pid}").stat().st_uid
        # The state follows the parenthesised command name, which may itself hold ")".
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None  # it exited meanwhile
    return pid if owner == uid and state != "Z" else None


def _existing_uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def accepts(socket_path: Path) -> bool:
    """Whether a server listens on the Unix socket (a stale socket file refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True
