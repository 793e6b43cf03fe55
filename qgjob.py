#!/usr/bin/env python3
"""qgjob: submit AppWright test jobs to a qgjob server, follow them, wait for their results.

Standard library only, so a CI step can run ``python3 qgjob.py`` with nothing installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import glob
import gzip
import hashlib
import http.client
import json
import math
import os
import posixpath
import re
import shutil
import signal
import socket
import stat
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, NoReturn

__all__ = [
    "Bundle",
    "Client",
    "build_parser",
    "bundle_tests",
    "expand_tests",
    "find_project",
    "junit_xml",
    "main",
    "outcome",
    "pack_project",
    "results_table",
    "run",
    "submit_body",
    "wait_for",
    "write_junit",
]

Json = dict[str, Any]

DEFAULT_SERVER = "http://127.0.0.1:8000"
TARGETS = ("emulator", "device", "browserstack")
PLATFORMS = ("android", "ios")
#: What a device profile may state, as the API names it.
PROFILE_KEYS = ("platform", "device", "os_version")
#: Every job status, in lifecycle order (the order progress counts are shown in).
STATUSES = (
    "submitted",
    "grouped",
    "assigned",
    "running",
    "retrying",
    "passed",
    "failed",
    "error",
    "cancelled",
    "timed_out",
)
TERMINAL = frozenset({"passed", "failed", "error", "cancelled", "timed_out"})
UNSUCCESSFUL = frozenset({"failed", "error", "cancelled", "timed_out"})
#: What ``rerun --failed`` runs again: jobs that ended without passing, not cancelled ones.
RERUN_FAILED = frozenset({"failed", "error", "timed_out"})
#: The fields a rerun copies from the jobs it reruns.
RERUN_FIELDS = (
    "org_id",
    "app_version_id",
    "target",
    "priority",
    "build",
    "repo",
    "commit",
    "tags",
    "max_attempts",
    "timeout_s",
)
#: Why a job is cancelled when the command waiting for it is interrupted.
INTERRUPT_REASON = "the qgjob command waiting for it was interrupted"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_UNREACHABLE = 4
EXIT_ERROR = 5
EXIT_INTERRUPTED = 130

DEFAULT_WAIT_TIMEOUT_S = 1800.0
#: Seconds one long-poll asks the server to hold the request open.
LONG_POLL_S = 25
#: On a terminal the long-poll is shorter so the live progress line moves.
LONG_POLL_TTY_S = 5
#: Floor between two long-polls, in case a server answers before the requested wait.
MIN_POLL_GAP_S = 1.0
#: Socket timeout of a plain request; a long-poll adds its wait to it.
REQUEST_TIMEOUT_S = 10.0
RETRY_BASE_S = 0.2
RETRY_CAP_S = 3.0
#: Retries of one request stop once the next pause would take it past this.
RETRY_BUDGET_S = 10.0
RETRY_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "qgjob-cli"
EVENT_OUTPUT_LINES = 40

DESCRIPTION = """\
Submit AppWright end-to-end test jobs to a qgjob server, follow them, and wait
for their results. The server queues the jobs, groups them by app version and
target so each app build is installed once per device, and runs them."""

EPILOG = """\
exit status:
  0    success; with --wait or wait: every job passed
  1    a test failed, or a job was cancelled or timed out
  2    usage or configuration error, or the server refused the request (HTTP 4xx)
  3    --timeout elapsed before every job finished
  4    the server could not be reached, or it failed (HTTP 5xx)
  5    no test failed, but the infrastructure (device, build, runner) failed a job
       after its retries: worth running the pipeline again
  130  interrupted (SIGINT or SIGTERM); submit --wait and rerun --wait cancel
       their run first, unless --no-cancel-on-interrupt

environment:
  QGJOB_SERVER  server URL when --server is not given
  QGJOB_TOKEN   API token when --token is not given

example:
  qgjob submit --org-id=qualgent --app-version-id=xyz123 \\
      --test='tests/*.spec.js' --target=device --wait --junit=junit.xml"""


class CliError(Exception):
    """The command failed; the message is printed as one line on stderr."""

    exit_code = EXIT_USAGE


class ServerUnreachable(CliError):
    """The server could not be reached."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the qgjob server at {server} ({reason}); "
            "start one with 'make up' or set --server/QGJOB_SERVER"
        )


class ApiError(CliError):
    """The server answered with an error response."""

    def __init__(
        self, server: str, status: int, message: str, code: str | None, field: str | None
    ) -> None:
        self.status = status
        self.code = code
        self.field = field
        self.exit_code = EXIT_USAGE if status < 500 else EXIT_UNREACHABLE
        details = [f"field {field}"] if field else []
        details.append(f"HTTP {status} {code}" if code else f"HTTP {status}")
        text = f"{message} ({'; '.join(details)})"
        super().__init__(text if status < 500 else f"the qgjob server at {server} failed: {text}")


class BadResponse(CliError):
    """The server answered with something that is not the API's JSON."""

    exit_code = EXIT_UNREACHABLE


class _Retryable(Exception):
    """A failure worth another try; ``error`` is what the user sees if none succeeds."""

    def __init__(self, error: CliError) -> None:
        super().__init__(str(error))
        self.error = error


# --- HTTP ---------------------------------------------------------------------------------


class Client:
    """JSON over HTTP to one qgjob server, with bounded retries of transient failures."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.token = token

    def get(self, path: str, query: dict[str, Any] | None = None, *, wait_s: int = 0) -> Json:
        return self.request("GET", path, query=query, timeout=REQUEST_TIMEOUT_S + wait_s)

    def post(
        self, path: str, body: Json | None = None, *, headers: dict[str, str] | None = None
    ) -> Json:
        return self.request("POST", path, body=body, headers=headers)

    def exists(self, path: str, query: dict[str, Any] | None = None) -> bool:
        """Whether HEAD *path* finds something (2xx) rather than nothing (404)."""
        try:
            self.request("HEAD", path, query=query)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def put_file(
        self, path: str, file: IO[bytes], size: int, query: dict[str, Any] | None = None
    ) -> Json:
        """PUT the content of *file*, streamed from its start, never read whole."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return self.request("PUT", path, query=query, upload=file, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Json | None = None,
        upload: IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> Json:
        """Send one request, retrying connection failures and 502/503/504 with backoff.

        Retrying a POST is safe only because callers that create things send an
        Idempotency-Key, which goes out unchanged on every try; retrying an upload, because
        it names its content by digest. *upload* is sent from its start on every try.
        """
        url = self.server + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        all_headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        data: bytes | IO[bytes] | None = upload
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        started = time.monotonic()
        attempt = 0
        while True:
            if upload is not None:
                upload.seek(0)
            req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
            try:
                return self._send(req, timeout)
            except _Retryable as retryable:
                pause = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt)
                if time.monotonic() - started + pause > RETRY_BUDGET_S:
                    raise retryable.error from None
                attempt += 1
                time.sleep(pause)

    def _send(self, req: urllib.request.Request, timeout: float) -> Json:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                payload: bytes = response.read()
        except urllib.error.HTTPError as exc:
            try:
                error = self._api_error(exc.code, exc.read())
            finally:
                exc.close()
            if exc.code in RETRY_STATUSES:
                raise _Retryable(error) from exc
            raise error from exc
        except (OSError, http.client.HTTPException) as exc:
            cause: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            unreachable = ServerUnreachable(self.server, _describe_failure(cause))
            if isinstance(cause, ConnectionError | TimeoutError | http.client.HTTPException):
                raise _Retryable(unreachable) from exc
            raise unreachable from exc
        return {} if req.get_method() == "HEAD" else self._decode(payload)

    def _decode(self, payload: bytes) -> Json:
        try:
            document = json.loads(payload)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise BadResponse(f"the qgjob server at {self.server} sent a response that is not JSON")
        return document

    def _api_error(self, status: int, payload: bytes) -> ApiError:
        try:
            error = json.loads(payload)["error"]
            message = str(error["message"])
            code, field = error.get("code"), error.get("field")
        except (ValueError, KeyError, TypeError):
            reason = http.client.responses.get(status, "error")
            # An answer to HEAD has no body to say more.
            text = reason if not payload else f"{reason}, not from the qgjob API"
            return ApiError(self.server, status, text, None, None)
        return ApiError(
            self.server,
            status,
            message,
            None if code is None else str(code),
            None if field is None else str(field),
        )


def _describe_failure(cause: object) -> str:
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, ConnectionResetError | http.client.RemoteDisconnected):
        return "connection reset"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(cause) or type(cause).__name__


def _path(*parts: str) -> str:
    return "/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)


# --- submit -------------------------------------------------------------------------------


def expand_tests(patterns: Iterable[str], cwd: str | None = None) -> list[str]:
    """Expand glob patterns against files under ``cwd``; keep plain paths as given.

    Order is preserved and duplicates dropped, so ``--test a.spec.js --test '*.spec.js'``
    submits ``a.spec.js`` once. Raises CliError for a pattern that matches no file: the
    server would otherwise be sent the pattern itself as a test path.
    """
    base = cwd or os.getcwd()
    tests: dict[str, None] = {}
    for pattern in patterns:
        if glob.escape(pattern) == pattern:
            tests[pattern] = None
            continue
        matches = sorted(
            path
            for path in glob.glob(pattern, root_dir=base, recursive=True)
            if os.path.isfile(os.path.join(base, path))
        )
        if not matches:
            raise CliError(f"--test: the pattern {_shown(pattern)} matches no file under {base}")
        tests.update(dict.fromkeys(matches))
    return list(tests)


def _shown(text: str) -> str:
    """*text* quoted, with bytes that are not UTF-8 (from a file name or the command
    line) written as escapes."""
    readable = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return f"'{readable}'"


def _require_utf8(flag: str, value: str) -> None:
    """Refuse *value* unless it is UTF-8 text, the only text the server takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CliError(f"{flag}: {_shown(value)} is not valid UTF-8") from None


#: The submit option each body field comes from.
_SUBMIT_FLAGS = {
    "org_id": "--org-id",
    "app_version_id": "--app-version-id",
    "test_path": "--test",
    "tests": "--test",
    "build": "--build",
    "repo": "--repo",
    "commit": "--commit",
    "tags": "--tag",
}


def submit_body(
    args: argparse.Namespace,
    cwd: str | None = None,
    *,
    tests: list[str] | None = None,
    uploaded: Json | None = None,
) -> Json:
    """The POST /jobs body for parsed ``submit`` arguments: one job, or a suite of several.

    *tests*, when given, replaces the expanded ``--test`` patterns (specs sent relative to
    a bundle's root); *uploaded* adds or replaces fields (``bundle``, ``build``,
    ``platform``) naming what was uploaded. Raises CliError for a --test pattern that
    matches nothing, or any text that is not valid UTF-8 (a file name in another
    encoding).
    """
    tests = expand_tests(args.tests, cwd) if tests is None else tests
    body: Json = {"org_id": args.org_id, "app_version_id": args.app_version_id}
    # A superseding submit is always a run, even of one test: runs are what it cancels.
    if len(tests) == 1 and not args.supersede and not args.profiles:
        body["test_path"] = tests[0]
    else:
        body["tests"] = tests
    body["target"] = args.target
    optional = {
        "platform": args.platform,
        "device": args.device,
        "os_version": args.os_version,
        "profiles": args.profiles,
        "priority": args.priority,
        "build": args.build,
        "repo": args.repo,
        "commit": args.commit,
        "tags": args.tags,
        "max_attempts": None if args.retries is None else args.retries + 1,
        "supersede_key": args.supersede,
        "force": args.force or None,
    }
    body.update((key, value) for key, value in optional.items() if value is not None)
    for field, flag in _SUBMIT_FLAGS.items():
        value = body.get(field)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                _require_utf8(flag, text)
    body.update(uploaded or {})
    return body


def device_profile(text: str) -> Json:
    """A ``--device-profile`` value: ``platform=android,device=Pixel 8,os_version=14``."""
    profile: Json = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in PROFILE_KEYS or not value:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r}: use KEY=VALUE pairs separated by commas, KEY one of "
                f"{', '.join(PROFILE_KEYS)}"
            )
        if key in profile:
            raise argparse.ArgumentTypeError(f"{key} is given twice")
        profile[key] = value
    return profile


def profile_label(job: Json) -> str:
    """What the job needs of the device, for people: ``android Pixel 8 14``; ``any``."""
    stated = [str(job[key]) for key in PROFILE_KEYS if job.get(key)]
    return " ".join(stated) or "any"


# --- bundles and builds -------------------------------------------------------------------

PROJECT_CONFIG = "appwright.config.*"
#: Never packed into a bundle, wherever they are: the runner installs node_modules itself.
NEVER_PACKED = frozenset({"node_modules", ".git"})
#: What a local build's suffix says about the platform it runs on.
BUILD_PLATFORMS = {".apk": "android", ".aab": "android", ".ipa": "ios", ".app": "ios"}
UPLOAD_BLOCK = 1024 * 1024
#: Fixed stamps for every archive entry, so the same files always pack to the same digest.
_PACKED_MTIME = 0


def find_project(start: str) -> str | None:
    """The nearest directory from *start* upward holding an ``appwright.config.*``."""
    here = os.path.abspath(start)
    while True:
        if glob.glob(os.path.join(glob.escape(here), PROJECT_CONFIG)):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


class _GitIgnore:
    """The .gitignore rules of a project, read simply: a pattern without a slash matches a
    name at any depth below its file, one with a slash matches the path from the file's
    directory, a trailing slash matches directories only. Negations (``!``) are not
    supported and are skipped."""

    def __init__(self) -> None:
        #: (directory the rule's file is in, relative to the root; pattern; dirs only)
        self._rules: list[tuple[str, str, bool, bool]] = []

    def read(self, root: str, directory: str) -> None:
        try:
            with open(os.path.join(root, directory, ".gitignore"), encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return
        for line in lines:
            pattern = line.strip()
            if not pattern or pattern.startswith(("#", "!")):
                continue
            dirs_only = pattern.endswith("/")
            pattern = pattern.rstrip("/")
            anchored = "/" in pattern
            self._rules.append((directory, pattern.lstrip("/"), dirs_only, anchored))

    def ignores(self, path: str, *, is_dir: bool) -> bool:
        for directory, pattern, dirs_only, anchored in self._rules:
            if dirs_only and not is_dir:
                continue
            if directory and not path.startswith(directory + "/"):
                continue
            below = path[len(directory) + 1 :] if directory else path
            subject = below if anchored else posixpath.basename(below)
            if fnmatch.fnmatchcase(subject, pattern):
                return True
        return False


def _project_files(root: str) -> Iterator[str]:
    """Every file and symlink under *root* a bundle holds, as sorted '/'-separated paths."""
    ignore = _GitIgnore()

    def walk(directory: str) -> Iterator[str]:
        ignore.read(root, directory)
        with os.scandir(os.path.join(root, directory)) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        for entry in ordered:
            path = f"{directory}/{entry.name}" if directory else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name in NEVER_PACKED or ignore.ignores(path, is_dir=is_dir):
                continue
            if is_dir:
                yield from walk(path)
            elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                yield path

    yield from walk("")


class Bundle:
    """A project packed as a reproducible tar.gz in a temporary file, removed on close."""

    def __init__(self, root: str, file: IO[bytes], members: list[str]) -> None:
        self.root = root
        self.file = file
        #: The packed paths, relative to the root.
        self.members = members
        self.size, self.sha256 = _digest_of(file)

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.file.close()


def pack_project(root: str) -> Bundle:
    """Pack the AppWright project at *root* (everything but node_modules, .git and what its
    .gitignore files ignore) into a tar.gz whose digest depends only on the files' paths,
    contents and executable bits. Raises CliError for a symlink leading out of *root*."""
    root = os.path.abspath(root)
    members = list(_project_files(root))
    # The Bundle owns the file and closes it; a bundle may be too big to hold in memory.
    file = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=_PACKED_MTIME) as packed,
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            for member in members:
                info = _entry(root, member)
                if info.isreg():
                    with open(os.path.join(root, member), "rb") as content:
                        archive.addfile(info, content)
                else:
                    archive.addfile(info)
        return Bundle(root, file, members)
    except BaseException:
        file.close()
        raise


def _entry(root: str, member: str) -> tarfile.TarInfo:
    path = os.path.join(root, member)
    info = tarfile.TarInfo(member)
    info.mtime = _PACKED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if os.path.islink(path):
        target = os.readlink(path)
        resolved = os.path.normpath(os.path.join(os.path.dirname(member), target))
        if os.path.isabs(target) or resolved == ".." or resolved.startswith("../"):
            raise CliError(f"{path} is a symlink leading out of the project ({target})")
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        return info
    status = os.stat(path)
    info.mode = 0o755 if status.st_mode & stat.S_IXUSR else 0o644
    info.size = status.st_size
    return info


def _digest_of(file: IO[bytes]) -> tuple[int, str]:
    """The size and SHA-256 of *file*, read from its start in blocks."""
    file.seek(0)
    hasher = hashlib.sha256()
    size = 0
    while block := file.read(UPLOAD_BLOCK):
        hasher.update(block)
        size += len(block)
    return size, hasher.hexdigest()


def bundle_tests(tests: Iterable[str], cwd: str, bundle: Bundle) -> list[str]:
    """*tests*, as written from *cwd*, relative to the bundle's root. Raises CliError for
    a spec outside the project or not packed into the bundle."""
    packed = set(bundle.members)
    relative = []
    for test in tests:
        path = os.path.relpath(os.path.abspath(os.path.join(cwd, test)), bundle.root)
        path = path.replace(os.sep, "/")
        if path == ".." or path.startswith("../"):
            raise CliError(f"the spec {test} is outside the project {bundle.root} it is sent in")
        if path not in packed:
            raise CliError(
                f"the spec {test} is not in the project {bundle.root} "
                "(no such file, or ignored by a .gitignore)"
            )
        relative.append(path)
    return relative


def _upload(client: Client, org_id: str, kind: str, name: str, file: IO[bytes]) -> str:
    """Upload *file* as a blob unless the server has it already; returns its reference."""
    size, digest = _digest_of(file)
    path = _path("blobs", digest)
    if not client.exists(path, {"org": org_id}):
        client.put_file(path, file, size, {"org": org_id, "kind": kind, "name": name})
        _note(f"uploaded {kind} {name} ({size} bytes, sha256:{digest})")
    return f"sha256:{digest}"


def _is_local_build(build: str) -> bool:
    """Whether ``--build`` names a file here to upload, rather than a URL, a bs:// id or a
    path on the runner host."""
    return "://" not in build and os.path.isfile(build)


def _prepare_uploads(args: argparse.Namespace, client: Client) -> tuple[list[str], Json]:
    """Pack and upload the project and a local build as needed; returns the specs to send
    and the body fields naming the uploads."""
    cwd = os.getcwd()
    tests = expand_tests(args.tests, cwd)
    uploaded: Json = {}
    if args.project is not None and not os.path.isdir(args.project):
        raise CliError(f"--project {args.project} is not a directory")
    root = args.project or find_project(os.path.dirname(os.path.join(cwd, tests[0])))
    if root is not None:
        with pack_project(root) as bundle:
            tests = bundle_tests(tests, cwd, bundle)
            uploaded["bundle"] = _upload(client, args.org_id, "bundle", "tests.tar.gz", bundle.file)
    if args.build is not None and os.path.isdir(args.build):
        raise CliError(f"--build {args.build} is a directory; pass an .apk, .aab or .ipa file")
    if args.build is not None and _is_local_build(args.build):
        name = os.path.basename(args.build)
        with open(args.build, "rb") as build:
            uploaded["build"] = _upload(client, args.org_id, "build", name, build)
        # The server infers a platform from the build's suffix, which sha256:<hex> lacks.
        platform = BUILD_PLATFORMS.get(os.path.splitext(name)[1].lower())
        if platform is not None and args.platform is None and not args.profiles:
            uploaded["platform"] = platform
    return tests, uploaded


def _cmd_submit(args: argparse.Namespace, client: Client) -> int:
    tests, uploaded = _prepare_uploads(args, client)
    return _submit(args, client, submit_body(args, tests=tests, uploaded=uploaded))


def _submit(args: argparse.Namespace, client: Client, body: Json) -> int:
    """POST *body*, then print the ids, or with --wait wait for the results."""
    response = client.post("/jobs", body, headers={"Idempotency-Key": str(uuid.uuid4())})
    suite = "tests" in body
    if suite and body.get("supersede_key"):
        _supersede(client, str(response["run_id"]), str(body["supersede_key"]))
    if not args.wait:
        if args.json:
            _print_json(response)
        elif suite:
            print(response["run_id"])
            for job in response["jobs"]:
                print(f"{job['job_id']}\t{job['test_path']}")
        else:
            print(response["job_id"])
        return EXIT_OK
    if suite:
        run_id: str | None = str(response["run_id"])
        job_id = None
        _note(f"submitted run {run_id} ({len(response['jobs'])} jobs)")
    else:
        run_id, job_id = None, str(response["job_id"])
        _note(f"submitted job {job_id}")
    try:
        return _wait_and_report(args, client, job_id=job_id, run_id=run_id)
    except KeyboardInterrupt:
        if args.cancel_on_interrupt:
            _cancel_waited(client, job_id=job_id, run_id=run_id)
        raise


def _supersede(client: Client, run_id: str, key: str) -> None:
    cancelled = client.post(_path("runs", run_id, "supersede"))["cancelled"]
    if cancelled:
        runs = sorted({str(job["run_id"]) for job in cancelled if job.get("run_id")})
        _note(f"superseded {', '.join(runs)} ({len(cancelled)} unfinished jobs cancelled, {key})")


def _cancel_waited(client: Client, *, job_id: str | None, run_id: str | None) -> None:
    """Cancel what an interrupted wait was waiting for; say so, or why it could not be."""
    what = f"run {run_id}" if run_id else f"job {job_id}"
    path = _path("runs", run_id, "cancel") if run_id else _path("jobs", str(job_id), "cancel")
    try:
        client.post(path, {"reason": INTERRUPT_REASON})
    except CliError as error:
        _note(f"could not cancel {what}: {error}")
        return
    _note(f"interrupted: cancelled {what}")


def _cmd_rerun(args: argparse.Namespace, client: Client) -> int:
    run = client.get(_path("runs", args.run_id))
    jobs = [job for job in run["jobs"] if not args.failed or job["status"] in RERUN_FAILED]
    if not jobs:
        _note(f"run {args.run_id} has no failed jobs; nothing to rerun")
        return EXIT_OK
    first = jobs[0]
    body: Json = {name: first[name] for name in RERUN_FIELDS if first.get(name) is not None}
    body["tests"] = list(dict.fromkeys(str(job["test_path"]) for job in jobs))
    body["rerun_of"] = args.run_id
    return _submit(args, client, body)


# --- waiting ------------------------------------------------------------------------------


class Progress:
    """Counts by status on stderr: one rewritten line on a terminal, else a line per change."""

    def __init__(self, label: str) -> None:
        self.live = sys.stderr.isatty()
        self._label = label
        self._started = time.monotonic()
        self._last = ""
        self._width = 0

    def update(self, counts: dict[str, int]) -> None:
        text = f"{self._label}: {_format_counts(counts)}"
        if self.live:
            line = f"{text} [{time.monotonic() - self._started:.0f}s]"
            line = line[: max(20, shutil.get_terminal_size().columns - 1)]
            sys.stderr.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif text != self._last:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self._last = text

    def close(self) -> None:
        if self.live and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _format_counts(counts: dict[str, int]) -> str:
    ordered = [s for s in STATUSES if counts.get(s)] + sorted(set(counts) - set(STATUSES))
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in TERMINAL)
    parts = ", ".join(f"{counts[status]} {status}" for status in ordered if counts[status])
    return f"{parts or 'no jobs'} ({done}/{total} done)"


def _job_view(job: Json) -> Json:
    """A single job in the shape of GET /runs/{id}, so every wait reports one way."""
    status = str(job["status"])
    return {
        "run_id": job.get("run_id"),
        "done": status in TERMINAL,
        "counts": {status: 1},
        "jobs": [job],
    }


def wait_for(
    client: Client,
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    timeout: float,
    on_update: Callable[[dict[str, int]], None] = lambda counts: None,
    long_poll_s: int = LONG_POLL_S,
) -> tuple[Json, bool]:
    """Long-poll a job or a run until it is done or ``timeout`` elapses.

    Returns the last run view and whether the timeout elapsed first.
    """
    deadline = time.monotonic() + timeout
    # The first look does not wait, so progress shows where things stand at once.
    poll_s = 0
    while True:
        asked = time.monotonic()
        wait_s = max(0, min(poll_s, math.ceil(deadline - asked)))
        poll_s = long_poll_s
        if run_id is not None:
            view = client.get(_path("runs", run_id), {"wait": wait_s}, wait_s=wait_s)
        else:
            assert job_id is not None
            view = _job_view(client.get(_path("jobs", job_id), {"wait": wait_s}, wait_s=wait_s))
        on_update(dict(view.get("counts") or {}))
        if view.get("done"):
            return view, False
        now = time.monotonic()
        if now >= deadline:
            return view, True
        time.sleep(max(0.0, min(MIN_POLL_GAP_S - (now - asked), deadline - now)))


def _wait_and_report(
    args: argparse.Namespace,
    client: Client,
    *,
    job_id: str | None = None,
    run_id: str | None = None,
) -> int:
    timeout = DEFAULT_WAIT_TIMEOUT_S if args.timeout is None else args.timeout
    progress = Progress(f"run {run_id}" if run_id else f"job {job_id}")
    try:
        view, timed_out = wait_for(
            client,
            job_id=job_id,
            run_id=run_id,
            timeout=timeout,
            on_update=progress.update,
            long_poll_s=LONG_POLL_TTY_S if progress.live else LONG_POLL_S,
        )
    finally:
        progress.close()
    if args.junit:
        write_junit(args.junit, view)
    if args.json:
        _print_json(view)
    else:
        print(results_table(view["jobs"]))
    if timed_out:
        again = f"--run-id {run_id}" if run_id else f"--job-id {job_id}"
        _note(f"gave up waiting after {timeout:g}s; resume with 'qgjob wait {again}'")
        return EXIT_TIMEOUT
    return outcome(view["jobs"])


def outcome(jobs: Iterable[Json]) -> int:
    """Exit status of finished jobs: 0 when all passed; 1 when any failed, was cancelled or
    timed out; else 5 when the infrastructure failed one (retrying the pipeline may help)."""
    statuses = {str(job["status"]) for job in jobs}
    if statuses - {"passed", "error"}:
        return EXIT_FAILED
    return EXIT_ERROR if "error" in statuses else EXIT_OK


def _cmd_wait(args: argparse.Namespace, client: Client) -> int:
    return _wait_and_report(args, client, job_id=args.job_id, run_id=args.run_id)


# --- reports ------------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; the last one is not padded so long paths do not widen lines."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def results_table(jobs: Sequence[Json]) -> str:
    """Test path, status and duration of each job, the errors of the failed ones, a summary;
    with a column and a summary per device profile when the jobs ran on several."""
    profiles = list(dict.fromkeys(profile_label(job) for job in jobs))
    per_profile = len(profiles) > 1
    rows = []
    for job in jobs:
        status = str(job["status"]) + (" (flaky)" if job.get("flaky") else "")
        row = [status, _seconds(job.get("duration_s")), str(job["test_path"])]
        rows.append([row[0], row[1], profile_label(job), row[2]] if per_profile else row)
    header = ["STATUS", "DURATION", *(["PROFILE"] if per_profile else []), "TEST"]
    lines = [_table(header, rows)]
    for job in jobs:
        failed = _failed_cases(job)
        for case in failed:
            file, line = _case_location(case)
            reason = str((case.get("error") or {}).get("message") or "failed").splitlines()
            where = f"{file}:{line}" if line else file
            lines.append(f"{where}: {_case_title(case)}: {reason[0] if reason else 'failed'}")
        if job["status"] != "passed" and job.get("last_error") and not failed:
            lines.append(f"{job['test_path']}: {job['last_error']}")
        elif job.get("waiting"):
            lines.append(f"{job['test_path']}: waiting: {job['waiting']['message']}")
    if per_profile:
        for profile in profiles:
            counts = _counts(job for job in jobs if profile_label(job) == profile)
            lines.append(f"{profile}: {_format_counts(counts)}")
    lines.append(_format_counts(_counts(jobs)))
    return "\n".join(lines)


def _counts(jobs: Iterable[Json]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return counts


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(value: Any) -> str:
    # Test output carries terminal colour codes, and XML 1.0 cannot hold control characters.
    text = "" if value is None else str(value)
    return _XML_UNSAFE.sub("", _ANSI_ESCAPE.sub("", text))


def _case_title(case: Json) -> str:
    """A test case's title: its describe blocks' titles and its own, joined with ' > '."""
    return " > ".join(str(title) for title in case.get("title_path") or [])


def _case_location(case: Json) -> tuple[str, int | None]:
    """Where a test case failed (file, line), else where it is declared."""
    error = case.get("error") or {}
    return str(error.get("file") or case["file"]), error.get("line") or case.get("line")


def _failed_cases(job: Json) -> list[Json]:
    return [case for case in job.get("tests") or [] if case.get("status") == "failed"]


def _job_case(suite: ET.Element, job: Json) -> ET.Element:
    """The job itself as a testcase: when it reported no tests, or ended for another reason."""
    case = ET.SubElement(
        suite,
        "testcase",
        name=_xml_text(job["test_path"]),
        classname=str(job["target"]),
        time=f"{float(job.get('duration_s') or 0):.3f}",
    )
    status = str(job["status"])
    message = _xml_text(job.get("last_error") or status)
    if status == "failed":
        ET.SubElement(case, "failure", message=message, type="failed").text = message
    elif status in UNSUCCESSFUL:
        ET.SubElement(case, "error", message=message, type=status).text = message
    elif status not in TERMINAL:
        unfinished = f"still {status} when the wait ended"
        ET.SubElement(case, "error", message=unfinished, type="not_finished")
    return case


def _test_case(suite: ET.Element, job: Json, test: Json) -> ET.Element:
    """One test case of a job's spec; a failure names its message and file:line."""
    case = ET.SubElement(
        suite,
        "testcase",
        name=_xml_text(_case_title(test)),
        classname=_xml_text(test["file"]),
        file=_xml_text(test["file"]),
        time=f"{float(test.get('duration_s') or 0):.3f}",
    )
    if test.get("line") is not None:
        case.set("line", str(test["line"]))
    status = test.get("status")
    if status == "failed":
        file, line = _case_location(test)
        message = _xml_text((test.get("error") or {}).get("message") or "failed")
        first = message.splitlines()[0] if message.strip() else "failed"
        failure = ET.SubElement(case, "failure", message=first, type="failed")
        failure.text = f"{message}\n\nat {file}:{line}" if line else f"{message}\n\nat {file}"
    elif status in ("skipped", "interrupted"):
        ET.SubElement(case, "skipped", message=str(status))
    elif status == "flaky":
        ET.SubElement(
            case, "system-out"
        ).text = f"flaky: passed on retry {test.get('retry', 0)} (job {job['job_id']})"
    return case


def junit_xml(view: Json) -> bytes:
    """A JUnit report of a run view: a testcase per test of each job's spec, or per job
    when a job reported no tests, plus the job itself when it ended for another reason
    than its tests (an infrastructure error, a timeout, a cancel)."""
    jobs: list[Json] = view["jobs"]
    app_versions = sorted({str(job["app_version_id"]) for job in jobs})
    name = ", ".join(app_versions) or "qgjob"
    root = ET.Element("testsuites", {"name": name})
    suite = ET.SubElement(root, "testsuite", {"name": name})
    if view.get("run_id"):
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="run_id", value=str(view["run_id"]))
    cases: list[ET.Element] = []
    for job in jobs:
        tests = job.get("tests") or []
        cases += [_test_case(suite, job, test) for test in tests]
        explained = job["status"] == "passed" or (job["status"] == "failed" and _failed_cases(job))
        if not tests or not explained:
            cases.append(_job_case(suite, job))
    counts = {
        "tests": str(len(cases)),
        "failures": str(sum(case.find("failure") is not None for case in cases)),
        "errors": str(sum(case.find("error") is not None for case in cases)),
        "skipped": str(sum(case.find("skipped") is not None for case in cases)),
        "time": f"{sum(float(case.get('time') or 0) for case in cases):.3f}",
    }
    for element in (root, suite):
        for key, value in counts.items():
            element.set(key, value)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(path: str, view: Json) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as report:
            report.write(junit_xml(view))
    except OSError as exc:
        raise CliError(f"cannot write the JUnit report {path}: {exc.strerror or exc}") from exc


# --- other commands -----------------------------------------------------------------------


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def _note(text: str) -> None:
    print(f"qgjob: {text}", file=sys.stderr)


def _status_line(job: Json) -> str:
    details = [f"target {job['target']}", f"attempt {job.get('attempts', 0)}"]
    if job.get("duration_s") is not None:
        details.append(_seconds(job["duration_s"]))
    if job.get("flaky"):
        details.append("flaky")
    if any(job.get(key) for key in PROFILE_KEYS):
        details.insert(1, profile_label(job))
    lines = [f"{job['job_id']}  {job['status']}  {job['test_path']}  ({', '.join(details)})"]
    if job.get("last_error"):
        lines.append(f"last error: {job['last_error']}")
    if job.get("waiting"):
        lines.append(f"waiting: {job['waiting']['message']}")
    for case in job.get("tests") or []:
        lines.append(
            f"  {case['status']:<11} {_seconds(case.get('duration_s')):>7}  {_case_title(case)}"
        )
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace, client: Client) -> int:
    job = client.get(_path("jobs", args.job_id))
    if args.json:
        _print_json(job)
    else:
        print(_status_line(job))
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    if args.run_id:
        run = client.post(_path("runs", args.run_id, "cancel"))
        jobs: list[Json] = run["jobs"]
    else:
        run = None
        jobs = [client.post(_path("jobs", args.job_id, "cancel"))]
    if args.json:
        _print_json(run if run is not None else jobs[0])
    else:
        for job in jobs:
            print(f"{job['job_id']}  {job['status']}")
    return EXIT_OK


def _cmd_flaky(args: argparse.Namespace, client: Client) -> int:
    query = {"org": args.org_id, "all": "true" if args.all else None, "limit": args.limit}
    tests: list[Json] = client.get("/flaky", query)["tests"]
    if args.json:
        _print_json({"tests": tests})
        return EXIT_OK
    if not tests:
        _note("no test has passed after failing" if not args.all else "no test results yet")
        return EXIT_OK
    rows = [
        [
            f"{float(test['flake_rate']):.0%}",
            str(test["runs"]),
            str(test["flaky_passes"]),
            str(test["failures"]),
            _seconds(test.get("median_duration_s")),
            str(test.get("last_failure") or "-")[:19],
            f"{test['test_file']} > {test['test_title']}",
        ]
        for test in tests
    ]
    header = ["FLAKE", "RUNS", "FLAKY", "FAILED", "MEDIAN", "LAST FAILURE", "TEST"]
    print(_table(header, rows))
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, client: Client) -> int:
    query: dict[str, Any] = {
        "org": args.org_id,
        "status": args.status,
        "app_version_id": args.app_version_id,
        "run_id": args.run_id,
        "limit": args.limit,
    }
    jobs: list[Json] = []
    while True:
        page = client.get("/jobs", query)
        jobs.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not (args.all and cursor):
            break
        query["cursor"] = cursor
    if args.json:
        _print_json({"jobs": jobs, "next_cursor": cursor})
        return EXIT_OK
    rows = [
        [
            str(job["job_id"]),
            str(job["status"]),
            str(job["target"]),
            str(job["priority"]),
            str(job["test_path"]),
        ]
        for job in jobs
    ]
    print(_table(["JOB ID", "STATUS", "TARGET", "PRIORITY", "TEST"], rows))
    if cursor:
        _note("more jobs match; add --all to list every page")
    return EXIT_OK


def _event_summary(data: Json) -> str:
    parts = []
    for key, value in data.items():
        if key in ("output", "job_id") or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        # A digest is shown whole: it says exactly which bundle or build ran.
        whole = len(text) <= 60 or text.startswith("sha256:")
        parts.append(f"{key}={text if whole else text[:57] + '...'}")
    return " ".join(parts)


def _cmd_events(args: argparse.Namespace, client: Client) -> int:
    document = client.get(_path("jobs", args.job_id, "events"))
    if args.json:
        _print_json(document)
        return EXIT_OK
    events: list[Json] = document["events"]
    rows = [
        [str(event["recorded_at"]), str(event["type"]), _event_summary(event.get("data") or {})]
        for event in events
    ]
    print(_table(["TIME", "EVENT", "DATA"], rows))
    with_output = [e for e in events if isinstance((e.get("data") or {}).get("output"), str)]
    if with_output:
        last = with_output[-1]
        lines = last["data"]["output"].rstrip("\n").splitlines()[-EVENT_OUTPUT_LINES:]
        print(f"\n--- output of {last['type']} (last {len(lines)} lines) ---")
        print("\n".join(lines))
    return EXIT_OK


# --- command line -------------------------------------------------------------------------


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The options are accepted before and after the command. Below the command they
    # default to SUPPRESS, so leaving them out there keeps what was given before it.
    unset: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--server",
        metavar="URL",
        default=unset,
        help=f"qgjob server URL (default: $QGJOB_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token",
        default=unset,
        help="API token, sent as 'Authorization: Bearer TOKEN' (default: $QGJOB_TOKEN)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print one JSON document on stdout instead of text",
    )


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds_arg,
        help=f"give up waiting after this long and exit 3 (default: {DEFAULT_WAIT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--junit",
        metavar="FILE",
        help="write a JUnit XML report of the results to FILE (a testcase per test)",
    )


def _add_submit_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait for the jobs to finish and print their results"
    )
    _add_wait_options(parser)
    parser.add_argument(
        "--no-cancel-on-interrupt",
        dest="cancel_on_interrupt",
        action="store_false",
        help="when interrupted while waiting (SIGINT, or SIGTERM as CI sends on cancel), "
        "leave the jobs running; by default they are cancelled",
    )


def build_parser() -> argparse.ArgumentParser:
    """The qgjob command line; also the source of the man page."""
    parser = argparse.ArgumentParser(
        prog="qgjob",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 79),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        _add_common(sub, top=False)
        return sub

    submit = command(
        "submit",
        "submit a test job, or a suite of them",
        "Submit one test job, or a suite when several tests are given. Prints the job id, "
        "or the run id and then one 'JOB_ID<TAB>TEST' line per job. With --wait, waits "
        "for the jobs to finish and prints their results.",
    )
    submit.add_argument(
        "--org-id", required=True, metavar="ORG", help="organisation the jobs belong to"
    )
    submit.add_argument(
        "--app-version-id",
        required=True,
        metavar="ID",
        help="app build under test; jobs of one app version and target share one app install",
    )
    submit.add_argument(
        "--test",
        dest="tests",
        action="append",
        required=True,
        metavar="PATH",
        help="AppWright spec to run; repeatable. A glob pattern ('tests/**/*.spec.js') is "
        "expanded against the current directory and must match at least one file; a "
        "plain path is sent as given",
    )
    submit.add_argument(
        "--target", choices=TARGETS, default="emulator", help="where to run (default: emulator)"
    )
    submit.add_argument(
        "--platform",
        choices=PLATFORMS,
        help="the platform the device must run (default: what the build's suffix says, "
        ".apk/.aab android, .ipa/.app ios)",
    )
    submit.add_argument("--device", metavar="MODEL", help="a device model, e.g. 'Pixel 8'")
    submit.add_argument(
        "--os-version",
        metavar="VERSION",
        help="an OS version prefix the device must match: 14 matches 14 and 14.1",
    )
    submit.add_argument(
        "--device-profile",
        dest="profiles",
        action="append",
        type=device_profile,
        metavar="PROFILE",
        help="run every test on this kind of device too, e.g. "
        "'platform=android,device=Pixel 8,os_version=14'; repeatable: a device matrix, one "
        "job per test per profile in one run",
    )
    submit.add_argument(
        "--priority",
        type=_int_in(1, 10),
        metavar="N",
        help="1 to 10, higher runs first (default: the server's, 5)",
    )
    submit.add_argument(
        "--build",
        metavar="LOCATION",
        help="the app binary: a file here (.apk, .aab, .ipa) is uploaded, unless the server "
        "has it already; a URL, a bs:// id or a path on the runner host is sent as given",
    )
    submit.add_argument(
        "--project",
        metavar="DIR",
        help="the AppWright project the specs belong to, packed (without node_modules and "
        "what .gitignore ignores) and uploaded unless the server has it already; specs are "
        "sent relative to it (default: the nearest directory upward from the first spec "
        f"holding {PROJECT_CONFIG}; none found: specs are sent as given, for a runner with "
        "its own project folder)",
    )
    submit.add_argument("--repo", help="repository the tests come from")
    submit.add_argument("--commit", metavar="SHA", help="commit the tests come from")
    submit.add_argument(
        "--tag", dest="tags", action="append", metavar="TAG", help="label the jobs; repeatable"
    )
    submit.add_argument(
        "--retries",
        type=_int_in(0),
        metavar="N",
        help="run a failing test up to N more times (default: 0; infrastructure errors "
        "are retried regardless)",
    )
    submit.add_argument(
        "--force",
        action="store_true",
        help="submit even when an identical job is already queued or running",
    )
    submit.add_argument(
        "--supersede",
        metavar="KEY",
        help="cancel the unfinished jobs of this organisation's older runs submitted with "
        "the same KEY (e.g. the branch), as a newer push supersedes an older one",
    )
    _add_submit_wait_options(submit)
    submit.set_defaults(handler=_cmd_submit)

    rerun = command(
        "rerun",
        "submit a run's jobs again, as a new run",
        "Submit the jobs of a run again, with the same app version, target and options, "
        "as a new run linked to the first (rerun_of). With --failed, only the jobs that "
        "failed, errored or timed out.",
    )
    rerun.add_argument("--run-id", required=True, metavar="ID", help="the run to rerun")
    rerun.add_argument(
        "--failed", action="store_true", help="only the jobs that did not pass (not cancelled ones)"
    )
    _add_submit_wait_options(rerun)
    rerun.set_defaults(handler=_cmd_rerun)

    status = command("status", "show a job's status", "Print a job's status line.")
    status.add_argument("--job-id", required=True, metavar="ID", help="the job to show")
    status.set_defaults(handler=_cmd_status)

    wait = command(
        "wait",
        "wait for a job or a run to finish",
        "Wait for a job, or every job of a run, to finish, then print the results. "
        "Waiting long-polls the server; it does not poll hot.",
    )
    which = wait.add_mutually_exclusive_group(required=True)
    which.add_argument("--job-id", metavar="ID", help="the job to wait for")
    which.add_argument("--run-id", metavar="ID", help="the run (suite) to wait for")
    _add_wait_options(wait)
    wait.set_defaults(handler=_cmd_wait)

    list_ = command("list", "list jobs", "List jobs, newest first, filtered by the options.")
    list_.add_argument("--org-id", metavar="ORG", help="only this organisation's jobs")
    list_.add_argument(
        "--status",
        choices=STATUSES,
        metavar="STATUS",
        help=f"only jobs with this status: {', '.join(STATUSES)}",
    )
    list_.add_argument("--app-version-id", metavar="ID", help="only jobs of this app version")
    list_.add_argument("--run-id", metavar="ID", help="only jobs of this run")
    list_.add_argument("--limit", type=_int_in(1), metavar="N", help="jobs per page")
    list_.add_argument("--all", action="store_true", help="follow the pages to the last one")
    list_.set_defaults(handler=_cmd_list)

    cancel = command(
        "cancel",
        "cancel a job, or every job of a run",
        "Cancel a job, or every unfinished job of a run, even mid-run. A job that already "
        "finished is left as it is.",
    )
    cancelled = cancel.add_mutually_exclusive_group(required=True)
    cancelled.add_argument("--job-id", metavar="ID", help="the job to cancel")
    cancelled.add_argument("--run-id", metavar="ID", help="the run whose jobs to cancel")
    cancel.set_defaults(handler=_cmd_cancel)

    flaky = command(
        "flaky",
        "list tests that passed only after failing",
        "List tests by flake rate: per test file and title, the runs (jobs that ran it), "
        "passes, failures, flaky passes (passed after failing, on a retry), the median "
        "duration and the last failure.",
    )
    flaky.add_argument("--org-id", metavar="ORG", help="only this organisation's tests")
    flaky.add_argument("--all", action="store_true", help="every test, not only flaky ones")
    flaky.add_argument("--limit", type=_int_in(1, 1000), metavar="N", help="at most N tests")
    flaky.set_defaults(handler=_cmd_flaky)

    events = command(
        "events",
        "show a job's timeline",
        "Print a job's events: time, type and key data, then the output kept by the last "
        "event that has any.",
    )
    events.add_argument("--job-id", required=True, metavar="ID", help="the job to show")
    events.set_defaults(handler=_cmd_events)
    return parser


def _check(args: argparse.Namespace) -> None:
    """Refuse option combinations argparse cannot express."""
    if args.command in ("submit", "rerun") and not args.wait:
        options = {
            "--timeout": args.timeout,
            "--junit": args.junit,
            "--no-cancel-on-interrupt": None if args.cancel_on_interrupt else True,
        }
        given = [flag for flag, value in options.items() if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CliError(f"{' and '.join(given)} {verb} only with --wait")
    if args.command == "submit" and args.profiles:
        beside = [f"--{key.replace('_', '-')}" for key in PROFILE_KEYS if getattr(args, key)]
        if beside:
            raise CliError(f"give {beside[0]} in each --device-profile, not beside them")
    split = urllib.parse.urlsplit(args.server)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise CliError(f"the server URL must look like http://host:port, got {args.server!r}")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (what CI sends a cancelled step) interrupts the command as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one qgjob command and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.server = args.server or os.environ.get("QGJOB_SERVER") or DEFAULT_SERVER
        args.token = args.token or os.environ.get("QGJOB_TOKEN") or None
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace, Client], int] = args.handler
    try:
        _check(args)
        with _sigterm_interrupts():
            return handler(args, Client(args.server, args.token))
    except CliError as error:
        print(f"qgjob: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\nqgjob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`qgjob list | head`); keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
