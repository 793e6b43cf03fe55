"""schemathesis against the real API in token mode: the OpenAPI document and the code agree.

schemathesis generates requests from /openapi.json (valid ones and ones that break the
schema on purpose), sends them to ``qgjobd api`` with a projector running, and checks
every answer: no 5xx, statuses, headers and bodies as documented, schema-valid requests
accepted and schema-violating ones refused (tests/schemathesis.toml says where
those expectations are wider, and why). Then the ledger is read back: it must hold the
events of the jobs the answers say were submitted and cancelled, and nothing else, so
that no refused request appended anything.

The event streams (/events/stream, /dashboard/changes) are left out: they answer for as long
as the client listens, and the
dashboard tests read it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from http_api.tokens import Scope, create_token
from tests.support.api import qgjobd_api, running

pytestmark = pytest.mark.slow

_CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Cases per operation and phase; the run as a whole generates well over 1,000.
_EXAMPLES = 60
_AT_LEAST = 1000


def _schemathesis(base: str, token: str, har: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(_CONFIG),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(_EXAMPLES),
        "--seed",
        "16",
        "--exclude-path",
        "/events/stream",
        "--exclude-path",
        "/dashboard/changes",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "har",
        "--report-har-path",
        str(har),
    ]
    # In *har*'s folder, where schemathesis leaves its cache.
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=har.parent)


def _answered(har: Path) -> list[tuple[str, str, int, Any]]:
    """(method, path, status, JSON body or None) of every request the run sent."""
    answers = []
    for entry in json.loads(har.read_text())["log"]["entries"]:
        response = entry["response"]
        try:
            body = json.loads(response["content"].get("text") or "null")
        except ValueError:
            body = None
        path = urlsplit(entry["request"]["url"]).path
        answers.append((entry["request"]["method"], path, response["status"], body))
    return answers


def _expected_streams(answers: list[tuple[str, str, int, Any]]) -> dict[uuid.UUID, list[str]]:
    """The events each job should have: JobSubmitted and JobGrouped for each job a submit
    answered 201 with, and a JobCancelled for each a cancel (of the job, of its run, or a
    supersede) answered as cancelled."""
    streams: dict[uuid.UUID, list[str]] = {}
    for method, path, status, body in answers:
        if method == "POST" and path in ("/jobs", "/submit-job") and status == 201:
            for job in body.get("jobs", [body]):
                streams[uuid.UUID(job["job_id"])] = ["JobSubmitted", "JobGrouped"]
    for method, path, status, body in answers:
        if method != "POST" or status != 200:
            continue
        if re.fullmatch(r"/jobs/[0-9a-f-]{36}/cancel", path):
            cancelled = [body]
        elif re.fullmatch(r"/runs/[0-9a-f-]{36}/cancel", path):
            cancelled = body["jobs"]
        elif re.fullmatch(r"/runs/[0-9a-f-]{36}/supersede", path):
            cancelled = body["cancelled"]
        else:
            continue
        for job in cancelled:
            events = streams[uuid.UUID(job["job_id"])]
            if job["status"] == "cancelled" and "JobCancelled" not in events:
                events.append("JobCancelled")
    return streams


def _ledger(db_url: str) -> dict[uuid.UUID, list[str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select stream_id, type from events order by position").fetchall()
    streams: dict[uuid.UUID, list[str]] = {}
    for stream_id, type_name in rows:
        streams.setdefault(stream_id, []).append(type_name)
    return streams


def test_schemathesis_finds_no_5xx_no_schema_violation_and_no_write_by_a_refused_request(
    db_url: str, tmp_path: Path
) -> None:
    token = create_token(db_url, "qualgent", scopes=[Scope.JOBS, Scope.METRICS])
    projector = [sys.executable, "qgjobd.py", "projector"]
    with (
        running(projector, {"QGJOB_DATABASE_URL": db_url}, log=tmp_path / "projector.log"),
        qgjobd_api(db_url, "--max-wait", "1", log=tmp_path / "api.log") as base,
    ):
        result = _schemathesis(base, token, tmp_path / "run.har")

    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    generated = re.search(r"(\d+) generated", report)
    assert generated is not None, report
    assert int(generated[1]) >= _AT_LEAST, report
    answers = _answered(tmp_path / "run.har")
    statuses = Counter(status for _, _, status, _ in answers)
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[201] > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0
    assert _ledger(db_url) == _expected_streams(answers)
    assert "Traceback" not in (tmp_path / "api.log").read_text()
