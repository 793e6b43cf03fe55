"""Report a qgjob result to GitHub Actions.

Reads what ``qgjob.py submit --wait --json`` printed (the run view of
``GET /runs/{id}``, or nothing when the command failed), appends a results
table to ``$GITHUB_STEP_SUMMARY`` (stdout when unset), prints an ``::error``
annotation with file and line for each failing test (GitHub shows them on the
run and beside the code), and writes the ``run-id``, ``passed``, ``failed`` and
``errored`` outputs to ``$GITHUB_OUTPUT`` when set. Standard library only: it
runs on a bare runner.

Usage: python3 scripts/step_summary.py RESULT_JSON
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["annotations", "main", "render"]

_STATUS_ORDER = (
    "passed",
    "failed",
    "error",
    "timed_out",
    "cancelled",
    "retrying",
    "running",
    "assigned",
    "grouped",
    "submitted",
)
_FAILED = frozenset({"failed", "timed_out", "cancelled"})
_UNSUCCESSFUL = _FAILED | {"error"}
_NO_RESULT = "qgjob returned no result; the submit step's log says why.\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _duration(job: dict[str, Any]) -> str:
    seconds = job.get("duration_s")
    return "—" if seconds is None else f"{float(seconds):.1f} s"


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _failed_tests(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [test for test in job.get("tests") or [] if test.get("status") == "failed"]


def _title(test: dict[str, Any]) -> str:
    return " > ".join(str(title) for title in test.get("title_path") or [])


def _location(test: dict[str, Any]) -> tuple[str, int | None]:
    """Where the test failed, else where it is declared."""
    error = test.get("error") or {}
    return str(error.get("file") or test["file"]), error.get("line") or test.get("line")


def _escape(text: str, *, property_value: bool = False) -> str:
    # The escapes GitHub's workflow commands define for messages and property values.
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def annotations(result: Any) -> list[str]:
    """An ``::error file=…,line=…,title=…::message`` line for each failing test."""
    if not isinstance(result, dict) or "jobs" not in result:
        return []
    lines = []
    for job in result["jobs"]:
        for test in _failed_tests(job):
            file, line = _location(test)
            properties = [f"file={_escape(file, property_value=True)}"]
            if line:
                properties.append(f"line={int(line)}")
            properties.append(f"title={_escape(_title(test), property_value=True)}")
            message = str((test.get("error") or {}).get("message") or "failed")
            lines.append(f"::error {','.join(properties)}::{_escape(message)}")
    return lines


def _status(job: dict[str, Any]) -> str:
    status = str(job["status"])
    return f"{status} (flaky)" if job.get("flaky") else status


def render(result: Any) -> tuple[str, dict[str, str]]:
    """Return the summary markdown and the step outputs for a decoded result."""
    if not isinstance(result, dict) or "jobs" not in result:
        return _NO_RESULT, {}
    jobs: list[dict[str, Any]] = result["jobs"]
    run_id = result.get("run_id") or ""
    counts = Counter(str(job["status"]) for job in jobs)
    known = [status for status in _STATUS_ORDER if counts[status]]
    tally = ", ".join(f"{counts[status]} {status}" for status in known)
    lines = [
        f"### qgjob run `{run_id}`" if run_id else "### qgjob",
        "",
        f"{len(jobs)} {'test' if len(jobs) == 1 else 'tests'}: {tally}" if jobs else "No tests.",
        "",
        "| Test | Status | Duration |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{_cell(str(job['test_path']))}` | {_status(job)} | {_duration(job)} |" for job in jobs
    ]
    failures = []
    for job in jobs:
        tests = _failed_tests(job)
        for test in tests:
            file, line = _location(test)
            where = f"{file}:{line}" if line else file
            message = str((test.get("error") or {}).get("message") or "failed")
            failures.append(f"- `{_cell(where)}` {_cell(_title(test))}: {_first_line(message)}")
        if not tests and job["status"] in _UNSUCCESSFUL and job.get("last_error"):
            failures.append(f"- `{job['test_path']}`: {_first_line(job['last_error'])}")
    if failures:
        lines += ["", "Failures:", "", *failures]
    outputs = {
        "run-id": str(run_id),
        "passed": str(counts["passed"]),
        "failed": str(sum(counts[status] for status in _FAILED)),
        "errored": str(counts["error"]),
    }
    return "\n".join(lines) + "\n", outputs


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    result = _load(Path(argv[0]))
    markdown, outputs = render(result)
    for line in annotations(result):
        print(line)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as stream:
            stream.write(markdown)
    else:
        sys.stdout.write(markdown)
    output = os.environ.get("GITHUB_OUTPUT")
    if output and outputs:
        with open(output, "a", encoding="utf-8") as stream:
            stream.writelines(f"{name}={value}\n" for name, value in outputs.items())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
