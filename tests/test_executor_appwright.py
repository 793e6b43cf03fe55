"""The AppWright executor, run against a fake ``npx appwright`` (tests/fake_appwright/npx).

The fake checks arguments and config as AppWright does and takes its behaviour from
words in the spec files each test writes (FAIL, CRASH, HANG, ...).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from runner.executors import (
    AppWrightExecutor,
    Batch,
    BatchJob,
    Executor,
    InfrastructureError,
    SlotSpec,
    Target,
)
from tests.support.browserstack import CREDENTIALS, FakeBrowserStack, fake_browserstack
from tests.support.executors import RecordingReporter

pytestmark = pytest.mark.anyio

FAKE_NPX = Path(__file__).parent / "fake_appwright" / "npx"
PIXEL = SlotSpec(
    name="pixel-8",
    target="emulator",
    capabilities={"platform": "android", "osVersion": "14", "device_name": "Pixel 8"},
)


@attrs.frozen(kw_only=True)
class Project:
    """A throwaway AppWright project and the executor that runs it."""

    dir: Path
    work_dir: Path
    record: Path

    def spec(self, name: str, body: str = "") -> str:
        path = self.dir / "tests" / name
        path.write_text(f"// {body}\n", encoding="utf-8")
        return f"tests/{name}"

    def records(self, event: str) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]

    def executor(self, **overrides: Any) -> AppWrightExecutor:
        options: dict[str, Any] = {
            "project_dir": self.dir,
            "build_template": "builds/{app_version_id}.apk",
            "work_dir": self.work_dir,
        }
        return AppWrightExecutor(**{**options, **overrides})


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    assert os.access(FAKE_NPX, os.X_OK), f"{FAKE_NPX} must be executable"
    monkeypatch.setenv("PATH", f"{FAKE_NPX.parent}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_APPWRIGHT_RECORD", str(record))
    project_dir = tmp_path / "project"
    (project_dir / "tests").mkdir(parents=True)
    (project_dir / "builds").mkdir()
    (project_dir / "builds" / "1.0.apk").write_bytes(b"apk")
    yield Project(dir=project_dir, work_dir=tmp_path / "work", record=record)
    for hang in Project(dir=project_dir, work_dir=tmp_path, record=record).records("hang"):
        for pid in (hang["pid"], hang["child_pid"]):
            if running(pid):
                os.kill(pid, 9)


def jobs(*specs: str, build: str | None = None) -> tuple[BatchJob, ...]:
    return tuple(BatchJob(job_id=uuid.uuid4(), test_path=s, build=build) for s in specs)


def batch(
    job_list: tuple[BatchJob, ...], *, timeout_s: float = 60.0, slot: SlotSpec = PIXEL
) -> Batch:
    return Batch(slot=slot, app_version_id="1.0", jobs=job_list, timeout_s=timeout_s)


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def load_config(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    body = text[text.index("defineConfig(") + len("defineConfig(") : text.rindex(");")]
    config: dict[str, Any] = json.loads(body)
    return config


def test_the_executor_satisfies_the_protocol(tmp_path: Path) -> None:
    executor: Executor = AppWrightExecutor(project_dir=tmp_path, work_dir=tmp_path / "w")
    assert executor.name == "appwright"


async def test_passing_specs_pass_after_all_jobs_started(project: Project) -> None:
    batch_jobs = jobs(project.spec("login.spec.ts"), project.spec("cart.spec.ts"))
    reporter = RecordingReporter()

    await project.executor().run(batch(batch_jobs), reporter)

    assert [kind for kind, _ in reporter.events] == ["started"] * 2 + ["finished"] * 2
    assert reporter.started_ids == [job.job_id for job in batch_jobs]
    for job in batch_jobs:
        outcome = reporter.outcomes[job.job_id]
        assert outcome.status == "passed"
        assert outcome.message == "1 test passed"
        assert outcome.duration_s == pytest.approx(0.08)
        assert "device ready" in outcome.output


async def test_a_failing_spec_fails_only_its_own_job(project: Project) -> None:
    bad, good = jobs(project.spec("login.spec.ts", "FAIL"), project.spec("cart.spec.ts"))
    reporter = RecordingReporter()

    await project.executor().run(batch((bad, good)), reporter)

    failed = reporter.outcomes[bad.job_id]
    assert failed.status == "failed"
    assert failed.message.startswith(
        "1 of 1 test failed: login.spec works: Error: expect(locator).toBeVisible() failed"
    )
    assert "\x1b" not in failed.message + failed.output
    assert "getByText('Sign in')" in failed.output
    assert reporter.outcomes[good.job_id].status == "passed"


RECORDED = Path(__file__).parent / "fixtures" / "playwright-1.46"


def recorded_spec(project: Project) -> str:
    """The spec Playwright 1.46 ran for the recorded report, made to replay that report."""
    spec = project.dir / "tests" / "checkout.spec.js"
    original = (RECORDED / "checkout.spec.js").read_text(encoding="utf-8")
    spec.write_text(f"// REPLAY checkout-report.json\n{original}", encoding="utf-8")
    return "tests/checkout.spec.js"


async def test_a_real_playwright_report_gives_every_test_with_the_failures_location(
    project: Project,
) -> None:
    """The report Playwright 1.46 wrote for a spec of 3 tests, 1 failing: the job fails,
    and carries the 3 tests, the failing one with its message and file:line."""
    (job,) = jobs(recorded_spec(project))
    reporter = RecordingReporter()

    await project.executor().run(batch((job,)), reporter)

    outcome = reporter.outcomes[job.job_id]
    assert outcome.status == "failed"
    assert [(case.title, case.status.value, case.line) for case in outcome.tests] == [
        ("checkout > adds an item to the cart", "passed", 5),
        ("checkout > applies a discount code", "failed", 9),
        ("checkout > shows the order summary", "passed", 14),
    ]
    failing = outcome.tests[1]
    assert failing.file == "tests/checkout.spec.js"
    assert failing.error is not None
    assert (failing.error.file, failing.error.line) == ("tests/checkout.spec.js", 11)
    assert failing.error.message.splitlines() == [
        "Error: expect(received).toBe(expected) // Object.is equality",
        "",
        "Expected: 80",
        "Received: 90",
    ]
    assert all(case.error is None for case in (outcome.tests[0], outcome.tests[2]))


async def test_a_crash_without_report_is_an_infrastructure_error(project: Project) -> None:
    batch_jobs = jobs(project.spec("a.spec.ts", "CRASH"), project.spec("b.spec.ts"))
    reporter = RecordingReporter()

    await project.executor().run(batch(batch_jobs), reporter)

    for job in batch_jobs:
        outcome = reporter.outcomes[job.job_id]
        assert outcome.status == "error"
        assert outcome.message.startswith("AppWright exited with code 1 and wrote no report")
        assert "worker process exited unexpectedly" in outcome.output


async def test_a_top_level_report_error_is_an_infrastructure_error(project: Project) -> None:
    (job,) = jobs(project.spec("a.spec.ts", "SETUP_ERROR"))
    reporter = RecordingReporter()

    await project.executor().run(batch((job,)), reporter)

    outcome = reporter.outcomes[job.job_id]
    assert outcome.status == "error"
    assert "global setup failed: no device online" in outcome.message


async def test_install_refuses_a_missing_build_naming_its_path(project: Project) -> None:
    with pytest.raises(InfrastructureError) as raised:
        await project.executor().install(PIXEL, "2.0", None)
    assert str(project.dir / "builds" / "2.0.apk") in raised.value.message

    with pytest.raises(InfrastructureError, match=r"build not found: /nowhere\.apk"):
        await project.executor().install(PIXEL, "1.0", "/nowhere.apk")

    with pytest.raises(InfrastructureError, match="no build template"):
        await project.executor(build_template=None).install(PIXEL, "1.0", None)


async def test_a_batch_whose_build_is_missing_errors_without_running(project: Project) -> None:
    batch_jobs = jobs(project.spec("a.spec.ts"), build="builds/missing.apk")
    reporter = RecordingReporter()

    await project.executor().run(batch(batch_jobs), reporter)

    assert reporter.started_ids == []
    (outcome,) = reporter.outcomes.values()
    assert outcome.status == "error"
    assert str(project.dir / "builds" / "missing.apk") in outcome.message
    assert project.records("invoked") == []


@pytest.mark.parametrize(
    ("target", "build", "expected"),
    [
        ("emulator", None, "{project}/builds/1.0.apk"),
        ("device", "builds/1.0.apk", "{project}/builds/1.0.apk"),
        ("browserstack", "bs://f7c874f21852ba57957a3fdc", "bs://f7c874f21852ba57957a3fdc"),
    ],
)
async def test_install_returns_the_build_reference_the_config_uses(
    project: Project, target: Target, build: str | None, expected: str
) -> None:
    slot = attrs.evolve(PIXEL, target=target)
    reference = await project.executor().install(slot, "1.0", build)
    assert reference == expected.format(project=project.dir)


@pytest.fixture
def browserstack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBrowserStack]:
    monkeypatch.setenv("BROWSERSTACK_USERNAME", CREDENTIALS[0])
    monkeypatch.setenv("BROWSERSTACK_ACCESS_KEY", CREDENTIALS[1])
    with fake_browserstack() as fake:
        yield fake


async def test_a_browserstack_install_uploads_the_file_and_returns_its_bs_id(
    project: Project, browserstack: FakeBrowserStack
) -> None:
    slot = attrs.evolve(PIXEL, target="browserstack")
    executor = project.executor(browserstack_upload_url=browserstack.upload_url)

    reference = await executor.install(slot, "1.0", None)

    (upload,) = browserstack.uploads
    assert reference == upload.app_url
    assert (upload.filename, upload.content) == ("1.0.apk", b"apk")


async def test_a_browserstack_install_hands_a_url_build_to_browserstack(
    project: Project, browserstack: FakeBrowserStack
) -> None:
    slot = attrs.evolve(PIXEL, target="browserstack")
    executor = project.executor(browserstack_upload_url=browserstack.upload_url)

    reference = await executor.install(slot, "1.0", "https://example.com/app.apk")

    (upload,) = browserstack.uploads
    assert (reference, upload.url, upload.content) == (
        upload.app_url,
        "https://example.com/app.apk",
        None,
    )


async def test_a_browserstack_install_refused_is_an_infrastructure_error(
    project: Project, browserstack: FakeBrowserStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWSERSTACK_ACCESS_KEY", "wrong")
    slot = attrs.evolve(PIXEL, target="browserstack")
    executor = project.executor(browserstack_upload_url=browserstack.upload_url)

    refused = "BrowserStack refused the build upload \\(401\\)"
    with pytest.raises(InfrastructureError, match=refused):
        await executor.install(slot, "1.0", None)
    assert browserstack.uploads == []


@attrs.frozen(kw_only=True)
class BuildServer:
    url: str
    requests: list[str]


@pytest.fixture
def build_server(tmp_path: Path) -> Iterator[BuildServer]:
    """Serves tmp_path/served over HTTP and counts the requests."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "app 1.apk").write_bytes(b"downloaded apk")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield BuildServer(url=f"http://127.0.0.1:{server.server_address[1]}", requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_url_build_is_downloaded_once_for_a_local_device(
    project: Project, build_server: BuildServer
) -> None:
    url = f"{build_server.url}/app%201.apk?token=x"
    executor = project.executor()

    first = await executor.install(PIXEL, "1.0", url)
    again = await executor.install(PIXEL, "1.0", url)

    assert first == again
    assert Path(first).name == "app 1.apk"
    assert Path(first).is_relative_to(project.work_dir)
    assert Path(first).read_bytes() == b"downloaded apk"
    assert build_server.requests == ["/app%201.apk?token=x"]


async def test_a_build_that_cannot_be_downloaded_is_an_infrastructure_error(
    project: Project, build_server: BuildServer
) -> None:
    url = f"{build_server.url}/missing.apk"
    with pytest.raises(InfrastructureError, match=f"cannot download build {url}: HTTP Error 404"):
        await project.executor().install(PIXEL, "1.0", url)
    assert not list(project.work_dir.glob("builds/*/*"))


@pytest.mark.parametrize(
    ("target", "build", "reason"),
    [
        ("emulator", "bs://f7c874f21852ba57957a3fdc", "BrowserStack app id"),
        ("device", "s3://bucket/app.apk", "unsupported scheme s3://"),
    ],
)
async def test_install_refuses_builds_the_target_cannot_use(
    project: Project, target: Target, build: str, reason: str
) -> None:
    with pytest.raises(InfrastructureError, match=reason):
        await project.executor().install(attrs.evolve(PIXEL, target=target), "1.0", build)


async def test_a_spec_path_with_spaces_is_refused_and_the_rest_run(project: Project) -> None:
    spaced, plain = jobs(project.spec("sign in.spec.ts"), project.spec("cart.spec.ts"))
    reporter = RecordingReporter()

    await project.executor().run(batch((spaced, plain)), reporter)

    refused = reporter.outcomes[spaced.job_id]
    assert refused.status == "error"
    assert "whitespace" in refused.message and "splits its arguments on spaces" in refused.message
    assert reporter.started_ids == [plain.job_id]
    assert reporter.outcomes[plain.job_id].status == "passed"
    (invoked,) = project.records("invoked")
    assert "tests/sign" not in " ".join(invoked["argv"])


async def test_a_missing_spec_file_is_an_error_for_that_job(project: Project) -> None:
    missing, present = jobs("tests/nope.spec.ts", project.spec("cart.spec.ts"))
    reporter = RecordingReporter()

    await project.executor().run(batch((missing, present)), reporter)

    assert reporter.outcomes[missing.job_id].status == "error"
    assert "spec file not found" in reporter.outcomes[missing.job_id].message
    assert reporter.outcomes[present.job_id].status == "passed"


@pytest.mark.parametrize(
    ("target", "provider"),
    [("emulator", "emulator"), ("device", "local-device"), ("browserstack", "browserstack")],
)
async def test_the_run_uses_a_generated_config_and_appwrights_argv(
    project: Project, target: Target, provider: str, browserstack: FakeBrowserStack
) -> None:
    batch_jobs = jobs(project.spec("a.spec.ts"), project.spec("b.spec.ts"), "tests/a.spec.ts")
    reporter = RecordingReporter()

    slot = attrs.evolve(PIXEL, target=target)
    executor = project.executor(browserstack_upload_url=browserstack.upload_url)
    await executor.run(batch(batch_jobs, slot=slot), reporter)

    assert {o.status for o in reporter.outcomes.values()} == {"passed"}
    (invoked,) = project.records("invoked")
    config_path = Path(invoked["argv"][6])
    assert invoked["argv"][1:] == [
        "appwright",
        "test",
        "tests/a.spec.ts",
        "tests/b.spec.ts",
        "--config",
        str(config_path),
        "--project",
        "pixel-8",
    ]
    assert config_path.name == "appwright.config.ts"
    assert config_path.parent.parent == project.work_dir
    assert Path(invoked["cwd"]) == project.dir
    config = load_config(config_path)
    assert config["projects"] == [
        {
            "name": "pixel-8",
            "use": {
                "platform": "android",
                "device": {"provider": provider, "name": "Pixel 8", "osVersion": "14"},
                "buildPath": browserstack.uploads[0].app_url
                if target == "browserstack"
                else str(project.dir / "builds" / "1.0.apk"),
            },
        }
    ]
    assert config["testDir"] == str(project.dir)
    assert (config["retries"], config["workers"]) == (0, 1)
    json_report = str(config_path.parent / "report.json")
    assert ["json", {"outputFile": json_report}] in config["reporter"]
    assert invoked["env"]["PLAYWRIGHT_JSON_OUTPUT_FILE"] == json_report
    assert invoked["env"]["PLAYWRIGHT_HTML_OPEN"] == "never"
    assert f'createRequire({json.dumps(str(project.dir / "package.json"))})("appwright")' in (
        config_path.read_text()
    )


@pytest.mark.parametrize(
    "args",
    [
        ["appwright", "test", "--project=pixel-8"],
        ["appwright", "test", "tests/a.spec.ts"],
    ],
)
def test_the_fake_refuses_what_appwright_refuses(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(
        [FAKE_NPX, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert done.returncode == 1
    assert "Capability to run all projects is not supported" in done.stdout


async def test_videos_are_moved_into_the_batch_directory(project: Project) -> None:
    (job,) = jobs(project.spec("a.spec.ts", "VIDEO"))

    await project.executor().run(batch((job,)), RecordingReporter())

    (video,) = project.work_dir.glob("*/attachments/a.spec.mp4")
    assert video.read_bytes() == b"fake video"
    assert not (project.dir / "playwright-report" / "data" / "videos-store" / "a.spec.mp4").exists()


@pytest.mark.slow
async def test_a_timeout_kills_the_run_and_times_out_unfinished_jobs(project: Project) -> None:
    done, hung, queued, never = jobs(
        project.spec("a.spec.ts"),
        project.spec("b.spec.ts", "HANG"),
        project.spec("c.spec.ts"),
        project.spec("d.spec.ts"),
    )
    reporter = RecordingReporter()
    started = time.monotonic()

    await project.executor().run(batch((done, hung, queued, never), timeout_s=3.0), reporter)

    assert time.monotonic() - started < 3.0 + 2.0, "the interrupted run should end at once"
    assert reporter.outcomes[done.job_id].status == "passed"
    for job in (hung, queued, never):
        timed_out = reporter.outcomes[job.job_id]
        assert timed_out.status == "timed_out"
        assert "3 s limit" in timed_out.message
    (invoked,) = project.records("invoked")
    (hang,) = project.records("hang")
    assert not any(map(running, (invoked["pid"], hang["pid"], hang["child_pid"])))


@pytest.mark.slow
async def test_a_run_that_ignores_signals_is_killed_after_the_grace(project: Project) -> None:
    (job,) = jobs(project.spec("a.spec.ts", "HANG IGNORE_SIGNALS"))
    reporter = RecordingReporter()
    started = time.monotonic()

    await project.executor(stop_grace_s=0.2).run(batch((job,), timeout_s=2.0), reporter)

    assert time.monotonic() - started < 5.0
    assert reporter.outcomes[job.job_id].status == "timed_out"
    (hang,) = project.records("hang")
    assert not running(hang["pid"]) and not running(hang["child_pid"])


@pytest.mark.slow
async def test_cancelling_a_run_kills_its_process_group_within_two_seconds(
    project: Project,
) -> None:
    (job,) = jobs(project.spec("a.spec.ts", "HANG"))
    reporter = RecordingReporter()
    task = asyncio.create_task(project.executor().run(batch((job,)), reporter))
    await eventually(lambda: project.records("hang"))
    (hang,) = project.records("hang")

    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(
        lambda: not running(hang["pid"]) and not running(hang["child_pid"]),
        timeout_s=2.0 - (time.monotonic() - cancelled_at),
    )

    assert reporter.started_ids == [job.job_id]
    assert reporter.outcomes == {}
