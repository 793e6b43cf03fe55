"""The dashboard renders the projections in a real (headless) browser.

tests/test_dashboard_pages.py drives it against a stack that runs suites."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from projections.projector import Projector
from tests.support.api import job_body, uvicorn_server
from tests.support.browser import CHROMIUM, open_page

pytestmark = pytest.mark.slow

_LIVE = "document.getElementById('connection').dataset.state === 'live'"


def _suite_body(tests: list[str]) -> dict[str, object]:
    body: dict[str, object] = {k: v for k, v in job_body().items() if k != "test_path"}
    return {**body, "tests": tests}


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium for a real browser (apt-get install -y chromium)"
)
def test_the_dashboard_lists_runs_and_shows_a_queued_run_safely(
    db_url: str, tmp_path: Path
) -> None:
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    tests = ["tests/login.spec.js", "tests/<script>alert(1)</script>.spec.js"]
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        response = httpx.post(f"{base}/jobs", json=_suite_body(tests))
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        asyncio.run(Projector(db_url).catch_up())
        with open_page(f"{base}/", tmp_path / "profile") as page:
            page.wait_for(f"{_LIVE} && !!document.getElementById('runs')", what="the runs list")
            home = page.dom()
            page.goto(f"{base}/#/runs/{run_id}")
            page.wait_for(f"{_LIVE} && !!document.getElementById('run-jobs')", what="the run")
            run_page = page.dom()
    runs_table = home[home.index('id="runs"') :]
    assert f'href="#/runs/{run_id}"' in runs_table and "xyz123" in runs_table
    assert re.search(r'id="run-progress" data-percent="0"', run_page)
    jobs_table = run_page[run_page.index('id="run-jobs"') :]
    assert "tests/login.spec.js" in jobs_table
    # Text is inserted as text, never as markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in jobs_table
    assert "<script>alert(1)" not in run_page
    # No device took the jobs (no runner here): each says what holds it.
    assert jobs_table.count("no live device slot is registered") == 2
