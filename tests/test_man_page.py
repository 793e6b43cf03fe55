"""The man page is built from the real CLI parser and renders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man to render the page")
def test_make_man_builds_a_page_that_man_renders(repo_root: Path) -> None:
    subprocess.run(["make", "-s", "man"], cwd=repo_root, check=True, capture_output=True)
    rendered = subprocess.run(
        ["man", "-l", str(repo_root / "man" / "qgjob.1")],
        check=True,
        capture_output=True,
        text=True,
        env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin"},
    ).stdout
    for words in ("qgjob submit", "--app-version-id", "QGJOB_SERVER", "exit"):
        assert words in rendered
