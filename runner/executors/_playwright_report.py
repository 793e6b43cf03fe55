"""Reading Playwright's JSON report: one verdict per spec file, with each of its tests.

The report nests suites (a file, then its describe blocks) holding specs (one ``test()``
each) holding tests (one per project) holding results (one per try: Playwright's own
retries). A file has a verdict when every one of its tests finished; it failed when any
test ended ``unexpected``. An interrupted run (timeout) leaves tests without a final
result: none, or an "interrupted" or "skipped" one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ledger.events import CaseError, CaseResult, CaseStatus

__all__ = ["FileVerdict", "Report", "ReportUnreadable", "read_report", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """*text* without terminal colour codes (Playwright colours its error messages)."""
    return _ANSI.sub("", text)


class ReportUnreadable(Exception):
    """The report file is missing or is not a Playwright JSON report."""


@attrs.frozen(kw_only=True)
class FileVerdict:
    """What the report says about one spec file."""

    #: Every test of the file reached a final result.
    complete: bool
    #: At least one test finished unexpectedly (a test failure).
    failed: bool
    #: One line: counts, and the first failure if any.
    summary: str
    #: Sum of the file's test durations.
    duration_s: float
    #: Error messages, stdout and stderr of the file's tests.
    output: str
    #: Files the tests attached (videos, screenshots), as the report gives them.
    attachments: tuple[Path, ...]
    #: Each test of the file, in report order.
    cases: tuple[CaseResult, ...] = ()


@attrs.frozen(kw_only=True)
class Report:
    #: Verdicts by absolute spec file path.
    files: Mapping[Path, FileVerdict]
    #: Errors outside any test (config, global setup, "No tests found"), first lines.
    errors: tuple[str, ...]


#: How much of a failure message a test case keeps.
_ERROR_LINES, _ERROR_CHARS = 12, 2000
_SNIPPET_LINE = re.compile(r"^\s*>?\s*\d+ \|")
_CASE_STATUS = {
    "expected": CaseStatus.PASSED,
    "unexpected": CaseStatus.FAILED,
    "flaky": CaseStatus.FLAKY,
    "skipped": CaseStatus.SKIPPED,
}


@attrs.frozen(kw_only=True)
class _Test:
    #: Relative to the report's root directory, as the report gives it.
    file: str
    title_path: tuple[str, ...]
    line: int | None
    data: Mapping[str, Any]

    @property
    def title(self) -> str:
        return " > ".join(self.title_path)


def read_report(path: Path, *, default_root: Path) -> Report:
    """Parse the report at *path*; spec paths are resolved against its ``rootDir``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        raise ReportUnreadable(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("suites", []), list):
        raise ReportUnreadable(f"{path} is not a Playwright JSON report")
    config = data.get("config")
    root = Path(config.get("rootDir") or default_root) if isinstance(config, dict) else default_root
    tests: dict[Path, list[_Test]] = {}
    for test in _walk(data.get("suites", []), (), None):
        tests.setdefault((root / test.file).resolve(), []).append(test)
    errors = tuple(_first_line(_error_text(e)) for e in data.get("errors", []) or [])
    files = {
        file: _verdict(ts, file, root=root, project_dir=default_root) for file, ts in tests.items()
    }
    return Report(files=files, errors=errors)


def _walk(suites: list[Any], titles: tuple[str, ...], file: str | None) -> Iterator[_Test]:
    for suite in suites:
        if not isinstance(suite, dict):
            continue
        # The outermost suite is the file (titled by its path); inner ones are describes.
        suite_file = suite.get("file") or file
        inner = (*titles, suite["title"]) if file is not None and suite.get("title") else titles
        for spec in suite.get("specs", []) or []:
            spec_file = spec.get("file") or suite_file
            if not spec_file:
                continue
            title_path = (*inner, str(spec.get("title", "")))
            line = spec.get("line")
            for test in spec.get("tests", []) or []:
                yield _Test(
                    file=str(spec_file),
                    title_path=title_path,
                    line=line if isinstance(line, int) else None,
                    data=test,
                )
        yield from _walk(suite.get("suites", []) or [], inner, suite_file)


def _complete(test: Mapping[str, Any]) -> bool:
    # A test skipped on purpose (test.skip, even at run time) expects "skipped"; any other
    # skipped result was cut short by an interruption, like an "interrupted" one.
    if test.get("expectedStatus") == "skipped":
        return True
    results = test.get("results") or []
    return bool(results) and results[-1].get("status") in ("passed", "failed", "timedOut")


def _verdict(tests: list[_Test], file: Path, *, root: Path, project_dir: Path) -> FileVerdict:
    complete = [t for t in tests if _complete(t.data)]
    failed = [t for t in complete if t.data.get("status") == "unexpected"]
    flaky = sum(1 for t in complete if t.data.get("status") == "flaky")
    skipped = sum(1 for t in complete if t.data.get("expectedStatus") == "skipped")
    output: list[str] = []
    attachments: list[Path] = []
    duration_ms = 0.0
    for test in tests:
        for result in test.data.get("results") or []:
            duration_ms += float(result.get("duration") or 0)
            output.extend(_result_output(test.title, result))
            attachments.extend(
                Path(a["path"]) for a in result.get("attachments") or [] if a.get("path")
            )
    if failed:
        first = failed[0]
        reason = _first_line(_test_error(first.data))
        summary = f"{len(failed)} of {len(tests)} {_tests(len(tests))} failed: {first.title}"
        summary += f": {reason}" if reason else ""
    else:
        passed = len(complete) - skipped
        summary = f"{passed} {_tests(passed)} passed"
        summary += f" ({flaky} flaky)" if flaky else ""
        summary += f", {skipped} skipped" if skipped else ""
    return FileVerdict(
        complete=len(complete) == len(tests),
        failed=bool(failed),
        summary=summary,
        duration_s=duration_ms / 1000,
        output=strip_ansi("".join(output)),
        attachments=tuple(attachments),
        cases=tuple(_case(t, _relative(file, project_dir), root, project_dir) for t in tests),
    )


def _case(test: _Test, file: str, root: Path, project_dir: Path) -> CaseResult:
    results = [r for r in test.data.get("results") or [] if isinstance(r, dict)]
    if _complete(test.data):
        status = _CASE_STATUS.get(str(test.data.get("status")), CaseStatus.FAILED)
    else:
        ran = bool(results) and results[-1].get("status") == "interrupted"
        status = CaseStatus.INTERRUPTED if ran else CaseStatus.SKIPPED
    error = None
    if status in (CaseStatus.FAILED, CaseStatus.FLAKY):
        error = _case_error(results, file, test.line, root, project_dir)
    return CaseResult(
        file=file,
        title_path=test.title_path,
        status=status,
        line=test.line,
        duration_s=sum(float(r.get("duration") or 0) for r in results) / 1000,
        retry=int(results[-1].get("retry") or 0) if results else 0,
        error=error,
    )


def _case_error(
    results: Sequence[Mapping[str, Any]], file: str, line: int | None, root: Path, project_dir: Path
) -> CaseError:
    """The last failure of a test's tries, and where it points (else the test itself)."""
    for result in reversed(results):
        errors = result.get("errors") or ([result["error"]] if result.get("error") else [])
        if not errors:
            continue
        error = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
        location = error.get("location") or result.get("errorLocation")
        where = location.get("file") if isinstance(location, dict) else None
        at = location.get("line") if isinstance(location, dict) else None
        return CaseError(
            message=_message(str(error.get("message") or _error_text(error))),
            file=_relative(root / str(where), project_dir) if where else file,
            line=at if isinstance(at, int) else line,
        )
    return CaseError(message="failed without an error message", file=file, line=line)


def _message(text: str) -> str:
    """The first lines of a failure message, without colours or the code snippet after it."""
    kept = []
    for line in strip_ansi(text).strip().splitlines()[:_ERROR_LINES]:
        if _SNIPPET_LINE.match(line):
            break
        kept.append(line)
    return "\n".join(kept).strip()[:_ERROR_CHARS]


def _relative(path: Path, project_dir: Path) -> str:
    """*path* relative to the test project when it is inside it, as test paths are."""
    resolved, project = path.resolve(), project_dir.resolve()
    return str(resolved.relative_to(project)) if resolved.is_relative_to(project) else str(path)


def _result_output(title: str, result: Mapping[str, Any]) -> Iterator[str]:
    streams = [*(result.get("stdout") or []), *(result.get("stderr") or [])]
    texts = [str(chunk["text"]) for chunk in streams if isinstance(chunk, dict) and "text" in chunk]
    errors = [_error_text(e) for e in result.get("errors") or []]
    if not texts and not errors:
        return
    yield f"--- {title} [{result.get('status', '?')}, retry {result.get('retry', 0)}]\n"
    yield from texts
    for error in errors:
        yield error if error.endswith("\n") else error + "\n"


def _test_error(test: Mapping[str, Any]) -> str:
    for result in reversed(test.get("results") or []):
        errors = result.get("errors") or ([result["error"]] if result.get("error") else [])
        if errors:
            return _error_text(errors[0])
    return ""


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("stack") or error.get("message") or error.get("value") or "")
    return str(error)


def _first_line(text: str) -> str:
    for line in strip_ansi(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _tests(n: int) -> str:
    return "test" if n == 1 else "tests"
