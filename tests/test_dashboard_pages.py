"""The dashboard in headless Chromium against the real stack running suites with tokens.

Two organisations share a fleet: acme runs a suite over two emulator profiles (one
test fails, one fails as a broken device would and is retried), globex runs a small
suite on the one real device. Each sees its own runs, jobs and the devices it used only.
Screenshots of acme's run page and of the timeline are saved under the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from http_api.tokens import create_token
from tests.support.browser import CHROMIUM, Page, open_page
from tests.support.stack import LAB, running_stack
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Chromium for a real browser (apt-get install -y chromium)"
    ),
]

FLEET = LAB + """
[[slots]]
name = "phone-1"
target = "device"
capabilities = { platform = "android", device = "Pixel 6", os_version = "14" }

[simulated]
install_s = 0.6
test_s = 0.4
"""

ACME_TESTS = [
    "tests/login.spec.js",
    "tests/cart.spec.js",
    "tests/search.spec.js",
    "tests/checkout-fail.spec.js",
    "tests/device-infra.spec.js",
]
ACME_PROFILES = [
    {"platform": "android", "device": "Pixel 7", "os_version": "13"},
    {"platform": "ios", "device": "iPhone 15", "os_version": "17"},
]
BAR = re.compile(r"<rect ([^>]*class=\"bar [^>]*)>")
ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


@pytest.fixture(scope="module")
def stack(
    pg_server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("dashboard-stack")
    config = logs / "fleet.toml"
    config.write_text(FLEET)
    arguments = ["--config", str(config), "--poll-interval", "0.5", "--drain-timeout", "2"]
    with running_stack(pg_server_url, template_database, logs, arguments, auth="token") as (
        base,
        url,
    ):
        tokens = {org: create_token(url, org) for org in ("acme", "globex")}
        acme = _submit(
            base,
            tokens["acme"],
            {
                "org_id": "acme",
                "app_version_id": "acme-app-1",
                "target": "emulator",
                "tests": ACME_TESTS,
                "profiles": ACME_PROFILES,
                "max_attempts": 3,
                "repo": "acme/shop",
                "commit": "0123456789abcdef",
            },
        )
        globex = _submit(
            base,
            tokens["globex"],
            {
                "org_id": "globex",
                "app_version_id": "globex-app-9",
                "target": "device",
                "tests": ["tests/profile.spec.js", "tests/settings.spec.js"],
            },
        )
        yield {"base": base, "url": url, "tokens": tokens, "runs": {"acme": acme, "globex": globex}}


def _submit(base: str, token: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{base}/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _run_done(stack: dict[str, Any], org: str) -> dict[str, Any]:
    run_id = stack["runs"][org]
    headers = {"Authorization": f"Bearer {stack['tokens'][org]}"}

    def done() -> dict[str, Any] | None:
        answer = httpx.get(f"{stack['base']}/runs/{run_id}?wait=5", headers=headers, timeout=10)
        document: dict[str, Any] = answer.json()
        return document if document["done"] else None

    return wait_until(done, timeout=120, what=f"{org}'s run to end")


@contextlib.contextmanager
def _browser(stack: dict[str, Any], org: str, profile: Path) -> Iterator[Page]:
    """A page signed in with *org*'s token: a link's fragment carries it once."""
    with open_page(f"{stack['base']}/#/?token={stack['tokens'][org]}", profile / org) as page:
        page.wait_for(_LIVE, what="the page to follow the change stream")
        yield page


_LIVE = "document.getElementById('connection').dataset.state === 'live'"


def _show(page: Page, stack: dict[str, Any], view: str) -> str:
    """The DOM once the page has drawn *view* (a fragment such as /devices)."""
    page.goto(f"{stack['base']}/#{view}")
    page.wait_for(
        f"document.body.dataset.view === {json.dumps('#' + view)} && {_LIVE}",
        what=f"the page to draw {view}",
    )
    return page.dom()


def _bars(dom: str) -> list[dict[str, str]]:
    return [dict(ATTRIBUTE.findall(attributes)) for attributes in BAR.findall(dom)]


def _ledger(url: str, org: str) -> dict[str, Any]:
    """From the ledger: the org's installs as (device, app version), its attempts started
    as (job, attempt), and the name of every slot."""
    with psycopg.connect(url) as conn:
        installs = conn.execute(
            "select stream_id::text, data ->> 'app_version_id' from events"
            " where type = 'AppInstalled' and metadata ->> 'org_id' = %s",
            (org,),
        ).fetchall()
        attempts = conn.execute(
            "select stream_id::text, (data ->> 'attempt')::int from events"
            " where type = 'JobStarted' and metadata ->> 'org_id' = %s",
            (org,),
        ).fetchall()
        names = dict(conn.execute("select device_id::text, name from devices").fetchall())
    return {"installs": installs, "attempts": attempts, "names": names}


def test_the_run_page_follows_a_suite_to_100_percent_with_its_device_timeline(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    run_view = f"/runs/{stack['runs']['acme']}"
    with _browser(stack, "acme", tmp_path) as page:
        # Opened while the suite runs, the page follows it by the change stream alone.
        _show(page, stack, run_view)
        first = int(page.evaluate("document.getElementById('run-progress').dataset.percent"))
        assert first < 100, "the page was opened before the suite ended"
        page.wait_for(
            "document.getElementById('run-progress').dataset.percent === '100'",
            timeout=120,
            what="the run page to reach 100 %",
        )
        run = _run_done(stack, "acme")
        # The last change drawn is the one that ended the run: its timeline is closed.
        page.wait_for("!document.querySelector('rect[data-outcome=running]')", what="closed bars")
        live = page.dom()
        shots = tmp_path / "screenshots"
        shots.mkdir()
        page.screenshot(shots / "run.png")
        page.prefer_dark(True)
        page.screenshot(shots / "run-dark.png")
        page.prefer_dark(False)
        timeline = _show(page, stack, "/timeline?window=900")
        page.screenshot(shots / "timeline.png")
    assert timeline.count('data-kind="attempt"') == live.count('data-kind="attempt"')
    assert len(run["jobs"]) == 10
    assert "10 of 10 jobs ended" in live
    profiles = live[live.index('id="profiles"') : live.index('id="timeline"')]
    assert "android · Pixel 7 · 13" in profiles and "ios · iPhone 15 · 17" in profiles
    jobs_table = live[live.index('id="run-jobs"') :]
    assert jobs_table.count('<td><span class="status passed">') == 6
    assert "tests/checkout-fail.spec.js" in jobs_table

    ledger = _ledger(stack["url"], "acme")
    bars = _bars(live)
    installs = [
        (b["data-device"], b["data-app-version"]) for b in bars if b["data-kind"] == "install"
    ]
    # One install per (slot, app version): every later batch on the slot reuses it.
    assert sorted(installs) == sorted(set(installs)) == sorted(set(ledger["installs"]))
    attempts = Counter(b["data-job"] for b in bars if b["data-kind"] == "attempt")
    assert attempts == Counter(job_id for job_id, _ in ledger["attempts"]), "a bar per attempt"
    infra = [job for job in run["jobs"] if job["test_path"] == "tests/device-infra.spec.js"]
    assert all(attempts[job["job_id"]] == 3 for job in infra), "each retry has its bar"
    outcomes = Counter(b["data-outcome"] for b in bars if b["data-kind"] == "attempt")
    # Failing tests are retried up to max_attempts too: 2 jobs x 3 attempts of each kind.
    assert outcomes == {"passed": 6, "failed": 6, "error": 6}
    lanes = {ledger["names"][b["data-device"]] for b in bars}
    assert lanes <= {"android-1", "android-2", "ios-sim"} and "ios-sim" in lanes
    print(f"screenshots in {shots}")


def test_the_job_page_shows_its_ledger_timeline_output_tests_and_provenance(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    run = _run_done(stack, "acme")
    failed = next(job for job in run["jobs"] if job["test_path"] == "tests/checkout-fail.spec.js")
    with _browser(stack, "acme", tmp_path) as page:
        dom = _show(page, stack, f"/jobs/{failed['job_id']}")
        page.screenshot(tmp_path / "job.png")
    timeline = dom[dom.index('id="job-timeline"') : dom.index('id="job-tests"')]
    for event in ("JobSubmitted", "JobGrouped", "JobAssigned", "JobStarted", "JobFailed"):
        assert f"<td>{event}</td>" in timeline, event
    assert "runner:" in timeline, "who did it"
    assert "android-" in timeline or "ios-sim" in timeline, "the slot, by name"
    output = dom[dom.index('id="job-output"') :]
    assert "[simulated] tests/checkout-fail.spec.js attempt 1" in output
    provenance = dom[dom.index('id="job-provenance"') : dom.index('id="job-timeline"')]
    assert stack["runs"]["acme"] in provenance and "acme/shop" in provenance
    assert "0123456789abcdef" in provenance
    artifacts = dom[dom.index('id="job-artifacts"') :]
    assert "no videos or screenshots recorded" in artifacts and "<a " not in artifacts[:200]


def test_each_organisation_sees_only_its_runs_jobs_and_the_devices_it_used(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    _run_done(stack, "acme")
    _run_done(stack, "globex")
    acme_run, globex_run = stack["runs"]["acme"], stack["runs"]["globex"]
    views = ("/", "/devices", "/timeline", f"/runs/{acme_run}", f"/runs/{globex_run}")
    pages = {}
    for org in ("acme", "globex"):
        with _browser(stack, org, tmp_path) as page:
            pages[org] = {view: _show(page, stack, view) for view in views}
            _show(page, stack, "/devices")
            page.screenshot(tmp_path / f"devices-{org}.png")
    for org, own, other, other_app in (
        ("acme", acme_run, globex_run, "globex-app-9"),
        ("globex", globex_run, acme_run, "acme-app-1"),
    ):
        seen = pages[org]
        assert f'href="#/runs/{own}"' in seen["/"]
        assert other not in seen["/"]
        assert "no such run for this organisation" in seen[f"/runs/{other}"]
        for view, dom in seen.items():
            assert 'data-state="live"' in dom, (org, view)
            assert other_app not in dom, (org, view)
    acme_devices = pages["acme"]["/devices"][pages["acme"]["/devices"].index('id="devices"') :]
    globex_devices = pages["globex"]["/devices"][
        pages["globex"]["/devices"].index('id="devices"') :
    ]
    assert "android-1" in acme_devices and "ios-sim" in acme_devices
    assert "phone-1" not in acme_devices and "phone-1" not in pages["acme"]["/timeline"]
    assert "phone-1" in globex_devices and "globex-app-9" in globex_devices
    for name in ("android-1", "android-2", "ios-sim"):
        assert name not in globex_devices and name not in pages["globex"]["/timeline"]
    globex_bars = _bars(pages["globex"]["/timeline"])
    assert {b["data-kind"] for b in globex_bars} == {"install", "attempt"}
    assert len([b for b in globex_bars if b["data-kind"] == "attempt"]) == 2
