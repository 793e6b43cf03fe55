"""The qgjob CLI's behaviour that needs no server: parsing, request bodies, reports, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qgjob

README_SUBMIT = [
    "submit",
    "--org-id=qualgent",
    "--app-version-id=xyz123",
    "--test=tests/onboarding.spec.js",
    "--target=device",
]


def _job(test_path: str, status: str, **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_id": f"job-{test_path}",
        "org_id": "qualgent",
        "app_version_id": "xyz123",
        "test_path": test_path,
        "target": "device",
        "priority": 5,
        "status": status,
        "run_id": "run-1",
        "attempts": 1,
        "flaky": False,
        "last_error": None,
        "duration_s": 1.5,
    }
    job.update(fields)
    return job


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by nobody who listens: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_original_readme_command_line_builds_a_single_job_body(tmp_path: Path) -> None:
    args = qgjob.build_parser().parse_args(README_SUBMIT)

    assert qgjob.submit_body(args, cwd=str(tmp_path)) == {
        "org_id": "qualgent",
        "app_version_id": "xyz123",
        "test_path": "tests/onboarding.spec.js",
        "target": "device",
    }


def test_several_tests_build_a_suite_body_with_every_option(tmp_path: Path) -> None:
    args = qgjob.build_parser().parse_args(
        [
            "submit",
            "--org-id",
            "qualgent",
            "--app-version-id",
            "xyz123",
            "--test",
            "tests/a.spec.js",
            "--test=tests/b.spec.js",
            "--target=browserstack",
            "--priority=8",
            "--build=bs://abc",
            "--repo=qualgent/app",
            "--commit=0123abc",
            "--tag=smoke",
            "--tag=login",
            "--retries=2",
            "--force",
        ]
    )

    assert qgjob.submit_body(args, cwd=str(tmp_path)) == {
        "org_id": "qualgent",
        "app_version_id": "xyz123",
        "tests": ["tests/a.spec.js", "tests/b.spec.js"],
        "target": "browserstack",
        "priority": 8,
        "build": "bs://abc",
        "repo": "qualgent/app",
        "commit": "0123abc",
        "tags": ["smoke", "login"],
        "max_attempts": 3,
        "force": True,
    }


def test_glob_patterns_expand_to_matching_files_and_plain_paths_pass_as_given(
    tmp_path: Path,
) -> None:
    for name in ["tests/login.spec.js", "tests/cart/pay.spec.js", "tests/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()

    tests = qgjob.expand_tests(
        ["tests/login.spec.js", "tests/**/*.spec.js", "remote/only.spec.js"], cwd=str(tmp_path)
    )

    assert tests == ["tests/login.spec.js", "tests/cart/pay.spec.js", "remote/only.spec.js"]


def _submit_cli(tmp_path: Path, test: bytes | str, server: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(Path(qgjob.__file__).resolve()),
            "--server",
            server,
            "submit",
            "--org-id=q",
            "--app-version-id=v",
            b"--test=" + os.fsencode(test),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=60,
    )


def test_a_glob_that_matches_nothing_is_exit_2_naming_the_pattern(
    tmp_path: Path, closed_port: int
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "login.spec.js").touch()

    result = _submit_cli(tmp_path, "tests/**/*.spec.ts", f"http://127.0.0.1:{closed_port}")

    assert result.returncode == 2, result.stderr
    assert "'tests/**/*.spec.ts' matches no file" in result.stderr
    assert "cannot reach" not in result.stderr


@pytest.mark.parametrize("how", ["given", "matched by a glob"])
def test_a_test_path_that_is_not_utf8_is_exit_2_naming_it(
    tmp_path: Path, closed_port: int, how: str
) -> None:
    name = b"caf\xe9.spec.js"
    if how == "given":
        test = name
    else:
        (tmp_path / os.fsdecode(name)).touch()
        test = b"*.spec.js"

    result = _submit_cli(tmp_path, test, f"http://127.0.0.1:{closed_port}")

    assert result.returncode == 2, result.stderr
    assert "--test: 'caf\\xe9.spec.js' is not valid UTF-8" in result.stderr


def test_a_glob_matching_several_files_submits_a_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.spec.js").touch()
    (tmp_path / "b.spec.js").touch()
    monkeypatch.chdir(tmp_path)
    args = qgjob.build_parser().parse_args(
        ["submit", "--org-id=q", "--app-version-id=v", "--test=*.spec.js"]
    )

    body = qgjob.submit_body(args)

    assert body["tests"] == ["a.spec.js", "b.spec.js"]
    assert body["target"] == "emulator"
    assert "test_path" not in body


def test_global_options_are_accepted_before_and_after_the_command() -> None:
    parser = qgjob.build_parser()

    before = parser.parse_args(["--server=http://ci:9000", "--token=t", "--json", *README_SUBMIT])
    after = parser.parse_args([*README_SUBMIT, "--server=http://ci:9000", "--token=t", "--json"])

    for args in (before, after):
        assert (args.server, args.token, args.json) == ("http://ci:9000", "t", True)


def test_unknown_target_exits_2_and_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code = qgjob.run([*README_SUBMIT[:-1], "--target=phone"])

    assert code == 2
    assert "invalid choice: 'phone'" in capsys.readouterr().err


def test_priority_out_of_range_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert qgjob.run([*README_SUBMIT, "--priority=11"]) == 2
    assert "--priority" in capsys.readouterr().err


def test_junit_without_wait_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert qgjob.run([*README_SUBMIT, "--junit=report.xml"]) == 2
    assert capsys.readouterr().err == "qgjob: --junit applies only with --wait\n"


def test_server_url_without_scheme_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert qgjob.run(["--server=localhost:8000", "status", "--job-id=x"]) == 2
    assert "http://host:port" in capsys.readouterr().err


def test_console_script_exits_with_the_commands_status() -> None:
    with pytest.raises(SystemExit) as exit_:
        qgjob.main(["wait"])

    assert exit_.value.code == 2


@pytest.mark.slow
def test_submit_and_wait_without_a_server_exits_4_with_one_line_after_bounded_retries(
    closed_port: int, tmp_path: Path
) -> None:
    server = f"http://127.0.0.1:{closed_port}"
    env = {**os.environ, "QGJOB_SERVER": server}
    started = time.monotonic()

    # -I -S: no site-packages, so this also proves the CLI needs only the standard library.
    result = subprocess.run(
        [sys.executable, "-I", "-S", qgjob.__file__, *README_SUBMIT, "--wait"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert time.monotonic() - started < 15
    assert result.returncode == 4
    assert result.stdout == ""
    assert result.stderr == (
        f"qgjob: cannot reach the qgjob server at {server} (connection refused); "
        "start one with 'make up' or set --server/QGJOB_SERVER\n"
    )


def test_junit_report_parses_and_names_the_failing_test(tmp_path: Path) -> None:
    view = {
        "run_id": "run-1",
        "done": True,
        "jobs": [
            _job("tests/login.spec.js", "passed", duration_s=12.25),
            _job(
                "tests/cart.spec.js",
                "failed",
                last_error="\x1b[31mexpect(locator).toBeVisible()\x1b[0m failed",
            ),
            _job("tests/slow.spec.js", "timed_out", last_error="no result after 600s"),
            _job("tests/gone.spec.js", "cancelled", duration_s=None),
        ],
    }
    report = tmp_path / "reports" / "junit.xml"

    qgjob.write_junit(str(report), view)

    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "xyz123"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "2")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["tests/login.spec.js"].get("time") == "12.250"
    assert cases["tests/login.spec.js"].get("classname") == "device"
    assert list(cases["tests/login.spec.js"]) == []
    failure = cases["tests/cart.spec.js"].find("failure")
    assert failure is not None
    assert failure.get("message") == "expect(locator).toBeVisible() failed"
    timed_out = cases["tests/slow.spec.js"].find("error")
    assert timed_out is not None
    assert timed_out.get("type") == "timed_out"
    cancelled = cases["tests/gone.spec.js"].find("error")
    assert cancelled is not None
    assert cancelled.get("type") == "cancelled"


def test_exit_status_is_1_unless_every_job_passed() -> None:
    assert qgjob.outcome([_job("a", "passed"), _job("b", "passed")]) == 0
    assert qgjob.outcome([_job("a", "passed"), _job("b", "failed")]) == 1
    assert qgjob.outcome([_job("a", "cancelled")]) == 1


def test_exit_status_is_5_when_only_the_infrastructure_failed() -> None:
    assert qgjob.outcome([_job("a", "passed"), _job("b", "error")]) == 5
    assert qgjob.outcome([_job("a", "error"), _job("b", "failed")]) == 1, "a test failure wins"
    assert qgjob.outcome([_job("a", "error"), _job("b", "timed_out")]) == 1


def test_no_cancel_on_interrupt_without_wait_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert qgjob.run([*README_SUBMIT, "--no-cancel-on-interrupt"]) == 2
    assert capsys.readouterr().err == "qgjob: --no-cancel-on-interrupt applies only with --wait\n"


def test_junit_report_has_a_testcase_per_test_and_the_job_when_it_errored(
    tmp_path: Path,
) -> None:
    failing = {
        "file": "tests/cart.spec.js",
        "title_path": ["cart", "checks out"],
        "status": "failed",
        "line": 9,
        "duration_s": 0.5,
        "retry": 1,
        "error": {
            "message": "Expected: 80\nReceived: 90",
            "file": "tests/cart.spec.js",
            "line": 11,
        },
    }
    passing = {**failing, "title_path": ["cart", "adds"], "status": "passed", "error": None}
    view = {
        "run_id": "run-1",
        "done": True,
        "jobs": [
            _job("tests/cart.spec.js", "failed", tests=[passing, failing]),
            _job("tests/device.spec.js", "error", last_error="device offline", tests=None),
        ],
    }

    root = ET.fromstring(qgjob.junit_xml(view))

    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    names = [(case.get("classname"), case.get("name")) for case in root.iter("testcase")]
    assert names == [
        ("tests/cart.spec.js", "cart > adds"),
        ("tests/cart.spec.js", "cart > checks out"),
        ("device", "tests/device.spec.js"),
    ]
    failure = root.find(".//testcase[@name='cart > checks out']/failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "Expected: 80"
    assert failure.text.endswith("at tests/cart.spec.js:11")
    error = root.find(".//testcase[@name='tests/device.spec.js']/error")
    assert error is not None and error.get("type") == "error"
    table = qgjob.results_table(view["jobs"])
    assert "tests/cart.spec.js:11: cart > checks out: Expected: 80" in table.splitlines()


def test_results_table_lists_each_test_and_the_failure_reason() -> None:
    table = qgjob.results_table(
        [_job("tests/a.spec.js", "passed"), _job("tests/b.spec.js", "failed", last_error="boom")]
    )

    assert table.splitlines() == [
        "STATUS  DURATION  TEST",
        "passed  1.5s      tests/a.spec.js",
        "failed  1.5s      tests/b.spec.js",
        "tests/b.spec.js: boom",
        "1 passed, 1 failed (2/2 done)",
    ]
