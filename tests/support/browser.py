"""Debian's headless Chromium, for tests that drive the real dashboard page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["CHROMIUM", "rendered_dom", "screenshot"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(profile: Path, budget_ms: int, *arguments: str) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def rendered_dom(url: str, profile: Path, *, budget_ms: int = 3000) -> str:
    """The page's DOM after its scripts ran, as headless Chromium leaves it."""
    return _chromium(profile, budget_ms, "--dump-dom", url)


def screenshot(url: str, profile: Path, path: Path, *, budget_ms: int = 3000) -> Path:
    """A PNG of the page at a laptop's window size, saved at *path*."""
    _chromium(
        profile, budget_ms, "--window-size=1400,1000", "--hide-scrollbars",
        f"--screenshot={path}", url,
    )
    return path
