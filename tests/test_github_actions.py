"""The GitHub workflows, the reusable action and the example AppWright project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.github_steps import read_key_values, run_workflow_steps, runner_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "action.yml"
EXAMPLES = ROOT / "examples"
SUMMARY_SCRIPT = ROOT / "scripts" / "step_summary.py"


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _actionlint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "actionlint"),
            "-no-color",
            "-oneline",
            f"-shellcheck={BIN / 'shellcheck'}",
            "-pyflakes=",
            *args,
        ],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def _triggers(workflow: dict[Any, Any]) -> Any:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    return workflow.get("on", workflow.get(True))


# --- lint -------------------------------------------------------------------


def test_actionlint_with_shellcheck_finds_nothing_in_the_workflows() -> None:
    workflows = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert {Path(path).name for path in workflows} >= {"appwright.yml", "ci.yml"}
    result = _actionlint(*workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_shell_mistake_in_a_run_step(tmp_path: Path) -> None:
    """The lint above really runs shellcheck on `run:` scripts."""
    workflow = tmp_path / "broken.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: for f in $(ls *.js); do echo "$f"; done\n',
        encoding="utf-8",
    )
    result = _actionlint(str(workflow))
    assert result.returncode == 1
    assert "shellcheck reported issue" in result.stdout


def test_action_steps_pass_actionlint_when_run_as_a_job() -> None:
    """actionlint reads only workflows, so the action's steps are linted as a workflow_call job."""
    action = _load(ACTION)
    workflow = {
        "on": {
            "workflow_call": {
                "inputs": {name: {"type": "string"} for name in action["inputs"]},
            }
        },
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }
    result = _actionlint("-stdin-filename", "action.yml", "-", stdin=yaml.safe_dump(workflow))
    assert result.returncode == 0, result.stdout + result.stderr


# --- structure --------------------------------------------------------------


def test_action_is_a_composite_action_with_the_documented_inputs_and_outputs() -> None:
    action = _load(ACTION)
    assert action["name"]
    assert action["description"]
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert set(inputs) == {
        "server",
        "token",
        "org-id",
        "app-version-id",
        "tests",
        "project",
        "build",
        "target",
        "priority",
        "timeout",
        "junit",
    }
    assert all(spec["description"] for spec in inputs.values())
    assert {name for name, spec in inputs.items() if spec.get("required")} == {
        "server",
        "org-id",
        "tests",
    }
    assert inputs["target"]["default"] == "emulator"
    assert inputs["priority"]["default"] == "5"
    assert inputs["timeout"]["default"] == "1800"
    steps = action["runs"]["steps"]
    assert all(step["shell"] == "bash" for step in steps if "run" in step)
    report = next(step for step in steps if step.get("id") == "report")
    assert report["if"] == "always()"
    assert "${{ github.action_path }}/scripts/step_summary.py" in report["run"]
    assert "${{ github.action_path }}/qgjob.py" in steps[0]["run"]
    assert {name: spec["value"] for name, spec in action["outputs"].items()} == {
        name: f"${{{{ steps.report.outputs.{name} }}}}"
        for name in ("run-id", "passed", "failed", "errored")
    }


def test_appwright_workflow_runs_the_suite_on_push_and_dispatch_and_always_reports() -> None:
    workflow = _load(WORKFLOWS / "appwright.yml")
    assert workflow["name"] == "AppWright Test"
    assert set(_triggers(workflow)) == {"push", "workflow_dispatch"}
    job = workflow["jobs"]["run-tests"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["env"]["QGJOB_SERVER"] == "${{ vars.QGJOB_SERVER }}"
    assert job["env"]["QGJOB_TOKEN"] == "${{ secrets.QGJOB_TOKEN }}"
    assert job["env"]["QGJOB_ORG_ID"].startswith("${{ vars.QGJOB_ORG_ID ||")
    steps = job["steps"]
    submit = next(step["run"] for step in steps if "qgjob.py submit" in step.get("run", ""))
    assert "examples/tests/*.spec.js" in submit
    for flag in (
        "--project examples",
        "--wait",
        "--junit qgjob-junit.xml",
        "--json",
        "--repo",
        "--commit",
    ):
        assert flag in submit
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-art"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "qgjob-junit.xml"
    (summary,) = [step for step in steps if "step_summary.py" in step.get("run", "")]
    assert summary["if"] == "always()"


def test_ci_runs_make_test_on_embedded_postgres_and_on_postgres_14_and_18() -> None:
    workflow = _load(WORKFLOWS / "ci.yml")
    jobs = workflow["jobs"]
    assert any(step.get("run") == "make test" for step in jobs["test"]["steps"])
    postgres = jobs["postgres"]
    assert postgres["strategy"]["matrix"]["pg"] == ["14", "18"]
    service = postgres["services"]["postgres"]
    assert service["image"] == "postgres:${{ matrix.pg }}"
    assert service["ports"] == ["5432:5432"]
    assert "pg_isready" in service["options"]
    assert postgres["env"]["QGJOB_TEST_DATABASE_URL"] == (
        "postgresql://postgres:postgres@localhost:5432/postgres"
    )
    assert any(step.get("run") == "make test" for step in postgres["steps"])


# --- the example AppWright project ------------------------------------------

_IMPORT = re.compile(r'^import \{ test, expect \} from "appwright";$', re.MULTILINE)
_TEST = re.compile(r"^test\(", re.MULTILINE)
_DEVICE_TEST = re.compile(r'^test\("[^"]+", async \(\{ device \}\) => \{$', re.MULTILINE)


def test_example_specs_are_appwright_tests_that_drive_the_device_fixture() -> None:
    specs = sorted((EXAMPLES / "tests").glob("*.spec.js"))
    assert len(specs) >= 3
    for spec in specs:
        source = spec.read_text(encoding="utf-8")
        assert _IMPORT.search(source), spec.name
        assert len(_DEVICE_TEST.findall(source)) == len(_TEST.findall(source)) > 0, spec.name
        assert "await device.getByText(" in source, spec.name
        assert re.search(r"await expect\(device\.getByText\(.+\)\)\.toBeVisible\(\);", source)


def test_example_config_has_one_project_per_qgjob_target() -> None:
    config = (EXAMPLES / "appwright.config.ts").read_text(encoding="utf-8")
    assert 'import { defineConfig, Platform } from "appwright";' in config
    projects = re.findall(
        r'name: "([^"]+)",\s*use: \{.*?provider: "([^"]+)"', config, flags=re.DOTALL
    )
    assert dict(projects) == {
        "emulator": "emulator",
        "device": "local-device",
        "browserstack": "browserstack",
    }
    assert re.search(r'name: "Google Pixel 8",\s*osVersion: "14.0"', config)
    assert "process.env.QGJOB_BUILD_PATH" in config
    assert config.count("buildPath,") == 3


def test_example_pins_appwright_0_1_1_with_a_playwright_that_works_with_it() -> None:
    package = json.loads((EXAMPLES / "package.json").read_text(encoding="utf-8"))
    assert package["devDependencies"] == {"appwright": "0.1.1", "@playwright/test": "1.46.1"}
    assert "0.1.1" in (EXAMPLES / "README.md").read_text(encoding="utf-8")


# --- the step summary -------------------------------------------------------


def _job(test_path: str, status: str, duration_s: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": f"job-{test_path}",
        "test_path": test_path,
        "status": status,
        "duration_s": duration_s,
        "flaky": False,
        "last_error": None,
        **extra,
    }


def _summarise(tmp_path: Path, result: str) -> tuple[str, dict[str, str], int]:
    env = runner_env(tmp_path / "runner")
    result_file = tmp_path / "result.json"
    result_file.write_text(result, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(SUMMARY_SCRIPT), str(result_file)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    outputs = read_key_values(Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))
    return summary, outputs, done.returncode


def test_step_summary_tables_every_test_with_its_status_and_duration(tmp_path: Path) -> None:
    run = {
        "run_id": "5f0c7a52-0000-4000-8000-000000000001",
        "done": True,
        "counts": {"passed": 2, "failed": 1, "timed_out": 1},
        "jobs": [
            _job("tests/login.spec.js", "passed", 12.34),
            _job("tests/search.spec.js", "passed", 3.0, flaky=True),
            _job(
                "tests/checkout.spec.js",
                "failed",
                40.0,
                last_error="Order confirmed not seen\n    at checkout.spec.js:15",
            ),
            _job("tests/onboarding.spec.js", "timed_out", None),
        ],
    }
    summary, outputs, returncode = _summarise(tmp_path, json.dumps(run))
    assert returncode == 0
    assert "| Test | Status | Duration |" in summary
    assert "| `tests/login.spec.js` | passed | 12.3 s |" in summary
    assert "| `tests/search.spec.js` | passed (flaky) | 3.0 s |" in summary
    assert "| `tests/checkout.spec.js` | failed | 40.0 s |" in summary
    assert "| `tests/onboarding.spec.js` | timed_out | — |" in summary
    assert "4 tests: 2 passed, 1 failed, 1 timed_out" in summary
    assert "- `tests/checkout.spec.js`: Order confirmed not seen" in summary
    assert outputs == {"run-id": run["run_id"], "passed": "2", "failed": "2", "errored": "0"}


def test_step_summary_of_a_single_test_has_no_run_id(tmp_path: Path) -> None:
    """`submit --wait` with one test reports the job in a run view whose run_id is null."""
    view = {
        "run_id": None,
        "done": True,
        "counts": {"passed": 1},
        "jobs": [_job("tests/login.spec.js", "passed", 1.0)],
    }
    summary, outputs, _ = _summarise(tmp_path, json.dumps(view))
    assert summary.startswith("### qgjob\n")
    assert "1 test: 1 passed" in summary
    assert "| `tests/login.spec.js` | passed | 1.0 s |" in summary
    assert outputs == {"run-id": "", "passed": "1", "failed": "0", "errored": "0"}


def test_step_summary_without_a_result_says_so_and_sets_no_outputs(tmp_path: Path) -> None:
    summary, outputs, returncode = _summarise(tmp_path, "")
    assert returncode == 0
    assert summary == "qgjob returned no result; the submit step's log says why.\n"
    assert outputs == {}


# --- the step runner --------------------------------------------------------

TRIVIAL_WORKFLOW = """\
name: trivial
on: push
env:
  GREETING: ${{ vars.GREETING || 'hello' }}
jobs:
  only:
    runs-on: ubuntu-latest
    env:
      SHA: ${{ github.sha }}
    steps:
      - uses: actions/checkout@v6
      - id: first
        run: |
          echo "word=$GREETING" >> "$GITHUB_OUTPUT"
          echo "CARRIED=from-env-file" >> "$GITHUB_ENV"
          pwd > where.txt
      - name: use what the first step left
        env:
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          echo "${{ steps.first.outputs.word }} $CARRIED $SHA [$TOKEN]" >> "$GITHUB_STEP_SUMMARY"
      - run: exit 3
      - run: echo "must not run" >> "$GITHUB_STEP_SUMMARY"
      - if: always()
        shell: bash
        run: echo "reported after the failure" >> "$GITHUB_STEP_SUMMARY"
"""


def test_run_workflow_steps_runs_run_steps_in_order_like_the_runner(tmp_path: Path) -> None:
    workflow = tmp_path / "trivial.yml"
    workflow.write_text(TRIVIAL_WORKFLOW, encoding="utf-8")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = runner_env(tmp_path / "runner")

    results = run_workflow_steps(workflow, {"github.sha": "abc123"}, env, workspace)

    assert [result.returncode for result in results] == [0, 0, 3, 0]
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert summary == "hello from-env-file abc123 []\nreported after the failure\n"
    assert (workspace / "where.txt").read_text(encoding="utf-8").strip() == str(workspace)
    assert read_key_values(Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8")) == {
        "word": "hello"
    }


def test_run_workflow_steps_takes_vars_and_secrets_from_the_expression_dict(
    tmp_path: Path,
) -> None:
    workflow = tmp_path / "trivial.yml"
    workflow.write_text(TRIVIAL_WORKFLOW, encoding="utf-8")
    env = runner_env(tmp_path / "runner")
    exprs = {"github.sha": "abc123", "vars.GREETING": "hi", "secrets.TOKEN": "s3cret"}

    run_workflow_steps(workflow, exprs, env, tmp_path)

    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert summary.splitlines()[0] == "hi from-env-file abc123 [s3cret]"


def test_run_workflow_steps_refuses_an_expression_it_was_not_given(tmp_path: Path) -> None:
    workflow = tmp_path / "trivial.yml"
    workflow.write_text(TRIVIAL_WORKFLOW, encoding="utf-8")
    with pytest.raises(KeyError, match=r"github\.sha"):
        run_workflow_steps(workflow, {}, runner_env(tmp_path / "runner"), tmp_path)


def test_run_workflow_steps_fills_action_inputs_from_their_defaults(tmp_path: Path) -> None:
    action = tmp_path / "action" / "action.yml"
    action.parent.mkdir()
    action.write_text(
        """\
name: echo
description: echoes its inputs
inputs:
  who:
    description: who
    required: true
  colour:
    description: colour
    default: ${{ github.sha }}-green
outputs:
  said:
    description: what it said
    value: ${{ steps.say.outputs.said }}
runs:
  using: composite
  steps:
    - id: say
      shell: bash
      env:
        WHO: ${{ inputs.who }}
        COLOUR: ${{ inputs.colour }}
      run: |
        echo "said=$WHO $COLOUR" >> "$GITHUB_OUTPUT"
        echo "${{ github.action_path }}" >> "$GITHUB_STEP_SUMMARY"
""",
        encoding="utf-8",
    )
    env = runner_env(tmp_path / "runner")

    (result,) = run_workflow_steps(
        action, {"github.sha": "abc123", "inputs.who": "ada"}, env, tmp_path
    )

    assert result.returncode == 0, result.stderr
    outputs = read_key_values(Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))
    assert outputs == {"said": "ada abc123-green"}
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8").strip() == str(
        action.parent
    )


def _copy_of_the_repository(tmp_path: Path) -> Path:
    """What the workflow's checkout step leaves: the files its run steps use."""
    workspace = tmp_path / "workspace"
    (workspace / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "qgjob.py", workspace)
    shutil.copy(SUMMARY_SCRIPT, workspace / "scripts")
    shutil.copytree(EXAMPLES, workspace / "examples")
    return workspace


def test_appwright_workflow_steps_hand_every_flag_to_the_cli_and_report_a_refusal(
    tmp_path: Path,
) -> None:
    """The CLI parses all the flags, then refuses the server URL; the report step still runs."""
    workspace = _copy_of_the_repository(tmp_path)
    env = runner_env(tmp_path / "runner")
    exprs = {
        "vars.QGJOB_SERVER": "qgjob.example.com",
        "github.sha": "abc123",
        "github.repository": "acme/shop",
        "github.repository_owner": "acme",
    }

    submit, report = run_workflow_steps(WORKFLOWS / "appwright.yml", exprs, env, workspace)

    assert submit.returncode == 2, submit.stderr
    assert "the server URL must look like http://host:port" in submit.stderr
    assert report.returncode == 0
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert summary == "qgjob returned no result; the submit step's log says why.\n"


def test_appwright_workflow_stops_at_once_without_a_server_variable(tmp_path: Path) -> None:
    workspace = _copy_of_the_repository(tmp_path)
    exprs = {"github.sha": "abc123", "github.repository": "acme/shop"}
    exprs["github.repository_owner"] = "acme"

    submit, _ = run_workflow_steps(
        WORKFLOWS / "appwright.yml", exprs, runner_env(tmp_path / "runner"), workspace
    )

    assert submit.returncode != 0
    assert "set the repository variable QGJOB_SERVER" in submit.stderr


def test_action_hands_every_input_to_the_cli_and_reports_a_refusal(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "runner")
    exprs = {
        "github.sha": "abc123",
        "github.repository": "acme/shop",
        "inputs.server": "qgjob.example.com",
        "inputs.org-id": "acme",
        "inputs.tests": "tests/login.spec.js\ntests/*.spec.js  tests/checkout.spec.js",
        "inputs.target": "browserstack",
        "inputs.priority": "9",
    }

    submit, report = run_workflow_steps(ACTION, exprs, env, tmp_path)

    assert submit.returncode == 2, submit.stderr
    assert "the server URL must look like http://host:port" in submit.stderr
    assert report.returncode == 0
    assert "qgjob returned no result" in Path(env["GITHUB_STEP_SUMMARY"]).read_text("utf-8")
    assert Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8") == ""


def test_action_refuses_an_empty_tests_input(tmp_path: Path) -> None:
    exprs = {"github.sha": "abc123", "github.repository": "acme/shop"}
    exprs |= {"inputs.server": "http://127.0.0.1:8000", "inputs.org-id": "acme"}

    submit, _ = run_workflow_steps(ACTION, exprs, runner_env(tmp_path / "runner"), tmp_path)

    assert submit.returncode == 2
    assert "::error::the tests input names no spec file" in submit.stdout
