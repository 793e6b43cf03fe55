"""hadolint finds nothing to say about the Dockerfile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_hadolint_passes_the_dockerfile(repo_root: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    linted = subprocess.run(
        [str(hadolint), "--no-color", "Dockerfile"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
