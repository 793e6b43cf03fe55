"""Flake history: the test_history and flaky_tests views and GET /flaky, on a history the
simulated executor's flake rate made."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ledger.events import JobFailed, JobPassed, JobSubmitted, Target
from tests.support.api import api_client
from tests.support.runner import agent_config, histories, pipeline, submit, wait_all_ended
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio

FLAKY_SPEC, BROKEN_SPEC = "tests/login.spec.js", "tests/checkout-fail.spec.js"


def job(test_path: str, org_id: str = "qualgent") -> JobSubmitted:
    return JobSubmitted(
        org_id=org_id,
        app_version_id="1.0",
        test_path=test_path,
        target=Target.EMULATOR,
        max_attempts=2,
    )


async def test_flaky_tests_counts_the_runs_that_passed_only_on_a_retry(db_url: str) -> None:
    agent = agent_config("lab", "emulator:2", simulated={"flake_rate": 0.5, "seed": 7})
    async with pipeline(db_url, agent):
        flaky_ids = await submit(db_url, [job(FLAKY_SPEC) for _ in range(16)])
        broken_ids = await submit(db_url, [job(BROKEN_SPEC) for _ in range(3)])
        other_org = await submit(db_url, [job(FLAKY_SPEC, org_id="acme")])
        await wait_all_ended(db_url, flaky_ids + broken_ids + other_org, timeout=60)

        # What the ledger says happened: a retried job that then passed was flaky.
        streams = await histories(db_url, flaky_ids)
        retried = {
            job_id
            for job_id, stream in streams.items()
            if [type(r.event) for r in stream if isinstance(r.event, JobFailed | JobPassed)]
            == [JobFailed, JobPassed]
        }
        assert 0 < len(retried) < len(flaky_ids), "the seed gives a mix of flaky and steady"

        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:

            async def history() -> dict[str, dict[str, Any]] | None:
                async with conn.cursor(row_factory=dict_row) as cursor:
                    await cursor.execute(
                        "select * from test_history where org_id = 'qualgent' order by test_file"
                    )
                    rows = {row["test_file"]: row for row in await cursor.fetchall()}
                ran = sum(row["runs"] for row in rows.values())
                return rows if ran == len(flaky_ids) + len(broken_ids) else None

            rows = await async_wait_until(history, timeout=20, what="the projection")

        async with api_client(db_url) as api:
            flaky = (await api.get("/flaky", params={"org": "qualgent"})).json()["tests"]
            every = (await api.get("/flaky", params={"org": "qualgent", "all": "true"})).json()
            bad = await api.get("/flaky", params={"all": "yes"})

    steady = rows[FLAKY_SPEC]
    assert steady["test_title"] == "simulated test"
    assert (steady["runs"], steady["passes"], steady["failures"]) == (16, 16, 0)
    assert steady["flaky_passes"] == len(retried)
    assert steady["flake_rate"] == pytest.approx(len(retried) / 16)
    assert steady["last_failure"] is not None
    assert steady["median_duration_s"] == pytest.approx(0.0)
    broken = rows[BROKEN_SPEC]
    assert (broken["runs"], broken["passes"], broken["failures"], broken["flaky_passes"]) == (
        3,
        0,
        3,
        0,
    )

    assert [(t["test_file"], t["flaky_passes"]) for t in flaky] == [(FLAKY_SPEC, len(retried))]
    assert {t["test_file"] for t in every["tests"]} == {FLAKY_SPEC, BROKEN_SPEC}
    assert all(t["org_id"] == "qualgent" for t in every["tests"]), "org-scoped"
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "all"
