"""Building and running qgjob's image with podman, for the container tests.

No Docker engine and no registry are reachable here, so images build against a Debian
base that debootstrap makes from the machine's own Debian mirror, imported once and then
kept in podman's image store (outside the repository) for later runs on this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.api import REPO_ROOT

__all__ = [
    "BASE_IMAGE",
    "build_image",
    "ensure_base_image",
    "podman",
    "podman_env",
    "unavailable_reason",
]

CONTAINERS_DIR = REPO_ROOT / "tests" / "containers"
#: The base every test image builds on: Debian with Python, as python:3.12-slim has.
BASE_IMAGE = "localhost/qgjob-test-base:bookworm"
_BASE_PACKAGES = "python3,python3-venv,ca-certificates"
# Where the base is made, and the lock that makes it once when test runs overlap.
_WORK_DIR = Path("/var/tmp/qgjob-containers")
_TOOLS = ("podman", "runc", "debootstrap")
_BUILD_TIMEOUT_S = 600


def unavailable_reason() -> str | None:
    """Why podman cannot run the container tests here, or None when it can."""
    if os.geteuid() != 0:
        return "podman runs the container tests as root (rootless needs subuid setup)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (`make containers` installs them as root)"
    return None


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_DIR / "containers.conf")}


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env()
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def ensure_base_image() -> str:
    """The Debian base image, made by debootstrap the first time on this machine."""
    _WORK_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(_WORK_DIR / "base.lock"):
        if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            _make_base_image()
    return BASE_IMAGE


def build_image(
    tag: str,
    *,
    context: Path,
    dockerfile: Path | None = None,
    build_contexts: Mapping[str, Path] | None = None,
) -> str:
    """Build *tag* on the base image; docker format, so HEALTHCHECK is kept."""
    args = ["build", "--quiet", "--format", "docker", "--build-arg", f"BASE={BASE_IMAGE}"]
    args += ["--tag", tag]
    if dockerfile is not None:
        args += ["--file", str(dockerfile)]
    for name, path in (build_contexts or {}).items():
        args += ["--build-context", f"{name}={path}"]
    podman(*args, str(context), timeout=_BUILD_TIMEOUT_S)
    # A rebuild leaves the previous image and the build stages untagged: run after run
    # they would fill the disk.
    podman("image", "prune", "--force")
    return tag


def _make_base_image() -> None:
    suite, mirror = _debian_suite_and_mirror()
    with tempfile.TemporaryDirectory(dir=_WORK_DIR) as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={_BASE_PACKAGES}", suite,
             str(rootfs), mirror],
            check=True, capture_output=True, timeout=_BUILD_TIMEOUT_S,
        )
        tar_command = ["tar", "-C", str(rootfs), "-c", "."]
        with subprocess.Popen(tar_command, stdout=subprocess.PIPE) as tar:
            subprocess.run(
                ["podman", "import", "-", BASE_IMAGE],
                stdin=tar.stdout, check=True, capture_output=True, env=podman_env(),
                timeout=_BUILD_TIMEOUT_S,
            )
        assert tar.returncode == 0


def _debian_suite_and_mirror() -> tuple[str, str]:
    """This machine's Debian release and the mirror its apt uses."""
    release = Path("/etc/os-release").read_text()
    suite = re.search(r"^VERSION_CODENAME=(\w+)", release, re.MULTILINE)
    sources = "\n".join(
        path.read_text()
        for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
        if path.is_file() and path.suffix in (".list", ".sources")
    )
    mirror = re.search(r"(?:^URIs:\s*|^deb\s+)(http\S+/debian)\b(?!-)", sources, re.MULTILINE)
    assert suite and mirror, "the container tests need Debian with an apt mirror"
    return suite[1], mirror[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
