"""Each job's Outcome from a finished AppWright run: the report's verdict, or why there is none."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ledger.events import CaseResult

from ._playwright_report import Report
from .base import OUTPUT_LIMIT, BatchJob, Outcome, OutcomeStatus, tail

__all__ = ["judge", "keep_attachments", "outcome", "read_tail"]


def outcome(
    job: BatchJob,
    status: OutcomeStatus,
    message: str,
    duration_s: float,
    output: str = "",
    tests: tuple[CaseResult, ...] = (),
) -> Outcome:
    return Outcome(
        job_id=job.job_id,
        status=status,
        message=message,
        duration_s=duration_s,
        output=tail(output),
        tests=tests,
    )


def read_tail(path: Path, limit: int = OUTPUT_LIMIT) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def judge(
    job: BatchJob,
    report: Report | None,
    *,
    project_dir: Path,
    returncode: int | None,
    timed_out: bool,
    timeout_s: float,
    elapsed_s: float,
    log_tail: str,
    batch_dir: Path,
) -> Outcome:
    """One job's outcome, from the report when it has a verdict for the job's file."""
    verdict = None if report is None else report.files.get((project_dir / job.test_path).resolve())
    if verdict is not None and (verdict.complete or verdict.failed):
        status: OutcomeStatus = "failed" if verdict.failed else "passed"
        message = verdict.summary if status == "passed" else f"{verdict.summary} (see {batch_dir})"
        output = verdict.output or log_tail
        return outcome(job, status, message, verdict.duration_s, output, verdict.cases)
    output = verdict.output if verdict is not None and verdict.output else log_tail
    cases = verdict.cases if verdict is not None else ()
    if timed_out:
        message = f"timed out: the batch ran past its {timeout_s:g} s limit (see {batch_dir})"
        return outcome(job, "timed_out", message, elapsed_s, output, cases)
    if report is None:
        reason = f"AppWright exited with code {returncode} and wrote no report"
    elif report.errors:
        reason = f"AppWright reported an error: {report.errors[0]}"
    elif verdict is None:
        reason = f"the report has no tests from {job.test_path}"
    else:
        reason = f"the report has no verdict for every test of {job.test_path}"
    return outcome(job, "error", f"{reason} (see {batch_dir})", elapsed_s, output, cases)


def keep_attachments(report: Report, shared_dir: Path, batch_dir: Path) -> None:
    """Move the batch's attachments out of *shared_dir* into the batch directory.

    AppWright downloads videos into the project's playwright-report directory, which
    every run shares and a later run may wipe; the batch directory is where they stay.
    """
    kept = batch_dir / "attachments"
    for verdict in report.files.values():
        for attachment in verdict.attachments:
            if attachment.is_relative_to(shared_dir) and attachment.is_file():
                # A lost video must not cost the batch its verdicts.
                with contextlib.suppress(OSError):
                    kept.mkdir(exist_ok=True)
                    shutil.move(attachment, kept / attachment.name)
