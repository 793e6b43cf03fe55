"""The live dashboard renders the projections in a real (headless) browser."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from projections.projector import Projector
from tests.support.api import job_body, uvicorn_server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, as headless Chromium leaves it."""
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
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium for a real browser (apt-get install -y chromium)"
)
def test_the_dashboard_shows_live_counts_queue_groups_and_jobs(db_url: str, tmp_path: Path) -> None:
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        for test in ("tests/login.spec.js", "tests/<script>alert(1)</script>.spec.js"):
            response = httpx.post(f"{base}/jobs", json=job_body(test_path=test))
            assert response.status_code == 201
        httpx.post(f"{base}/jobs", json=job_body(target="emulator", app_version_id="v2"))
        asyncio.run(Projector(db_url).catch_up())
        dom = _rendered_dom(f"{base}/", tmp_path / "profile")
    assert 'data-state="live"' in dom
    counts = dict(re.findall(r'id="count-(\w+)"><b>(\d+)</b>', dom))
    assert counts["grouped"] == "3"
    assert counts["passed"] == "0"
    jobs_table = dom[dom.index('id="jobs"') :]
    assert "tests/login.spec.js" in jobs_table
    # Text is inserted as text, never as markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in jobs_table
    assert "<script>alert(1)" not in dom
    groups_table = dom[dom.index('id="groups"') : dom.index('id="devices"')]
    assert "xyz123" in groups_table and "v2" in groups_table
    queue_table = dom[dom.index('id="queue"') : dom.index('id="groups"')]
    assert "emulator" in queue_table and "device" in queue_table
