"""qgjob's distributions, built as a user builds them, and fresh environments to install them in."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import attrs

from tests.support.api import REPO_ROOT

__all__ = ["Distributions", "build_distributions", "fresh_venv"]

# Building fetches the build backend, and a wheelhouse the server's dependencies: from
# pip's cache once they have been fetched on this machine.
_BUILD_TIMEOUT_S = 300


@attrs.frozen(kw_only=True)
class Distributions:
    #: The wheel `pip install qgjob` installs.
    wheel: Path
    #: The source distribution it was built from.
    sdist: Path
    #: The wheel and the wheels of every server dependency: what an offline install needs.
    wheelhouse: Path


def build_distributions(outdir: Path) -> Distributions:
    """``python -m build`` (sdist, then the wheel from it) and the server's wheelhouse."""
    dist = outdir / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO_ROOT)])
    (wheel,) = dist.glob("qgjob-*.whl")
    (sdist,) = dist.glob("qgjob-*.tar.gz")
    wheelhouse = outdir / "wheelhouse"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir"]
    _run([*pip_wheel, str(wheelhouse), f"{wheel}[server]"])
    return Distributions(wheel=wheel, sdist=sdist, wheelhouse=wheelhouse)


def fresh_venv(path: Path) -> Path:
    """A new virtual environment with pip and nothing else; returns its bin directory."""
    venv.create(path, with_pip=True)
    return path / "bin"


def _run(command: list[str]) -> None:
    # Not the test run's virtual environment: the build must stand on its own.
    env = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    built = subprocess.run(
        command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, env=env
    )
    assert built.returncode == 0, f"{' '.join(command)}:\n{built.stdout}{built.stderr}"
