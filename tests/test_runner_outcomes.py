"""How jobs end on simulated slots: retries, flaky passes, queue and run timeouts."""

from __future__ import annotations

import psycopg
import pytest

from ledger.decisions import JobStatus
from ledger.events import (
    FailureKind,
    JobFailed,
    JobRetryScheduled,
    JobSubmitted,
    JobTimedOut,
    Target,
    TimeoutKind,
)
from runner import ClaimPolicy
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def job(name: str, app: str = "1.0", **fields: object) -> JobSubmitted:
    return JobSubmitted(
        org_id="qualgent",
        app_version_id=app,
        test_path=f"tests/{name}.spec.ts",
        target=Target.EMULATOR,
        **fields,  # type: ignore[arg-type]
    )


async def test_test_failures_retry_only_when_asked_and_a_pass_after_a_failure_is_flaky(
    db_url: str,
) -> None:
    """Every test fails its first attempt here (flake rate 1): a job allowing two attempts
    passes on the second and shows as flaky; a job allowing one stays failed."""
    agent = agent_config("flaky", "emulator:1", simulated={"test_s": 0.0, "flake_rate": 1.0})
    async with pipeline(db_url, agent):
        retried, final = await submit(db_url, [job("a", max_attempts=2), job("b")])
        await wait_all_ended(db_url, [retried, final])

        async def projected() -> list[tuple[object, ...]]:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                cursor = await conn.execute(
                    "select job_id, status, flaky, attempts from jobs "
                    "where status in ('passed', 'failed') order by status desc"
                )
                rows = await cursor.fetchall()
            return rows if len(rows) == 2 else []

        rows = await async_wait_until(projected, what="the projection to show both jobs")

    assert rows == [(retried, "passed", True, 2), (final, "failed", False, 1)]
    streams = await histories(db_url, [retried, final])
    check_histories(streams)
    failure, retry = (r.event for r in streams[retried][4:6])
    assert isinstance(failure, JobFailed) and failure.kind == FailureKind.TEST
    assert isinstance(retry, JobRetryScheduled) and not retry.handed_back


async def test_an_idle_agent_hears_of_a_retry_without_waiting_for_its_poll(db_url: str) -> None:
    """The retry reaches the jobs table through the projector, whose batch tells the
    agents that jobs wait there (the queue channel): with a poll of a minute, the
    second attempt still comes at once."""
    agent = agent_config(
        "patient", "emulator:1", poll_interval_s=60.0, simulated={"flake_rate": 1.0}
    )
    async with pipeline(db_url, agent):
        (retried,) = await submit(db_url, [job("a", max_attempts=2)])
        await wait_all_ended(db_url, [retried], timeout=20.0)
    types = [recorded.type for recorded in (await histories(db_url, [retried]))[retried]]
    assert types[-1] == "JobPassed" and types.count("JobAssigned") == 2


async def test_a_retry_whose_backoff_ran_out_wakes_an_idle_agent_without_its_poll(
    db_url: str,
) -> None:
    """Nothing is appended when a backoff runs out: the fleet's maintenance tells the
    agents. With a poll of a minute, both attempts of the broken device still come
    within seconds."""
    agent = agent_config(
        "patient",
        "emulator:1",
        poll_interval_s=60.0,
        retry={"backoff_s": 0.5, "infra_attempts": 2},
    )
    async with pipeline(db_url, agent):
        (broken,) = await submit(db_url, [job("infra-device")])
        await wait_all_ended(db_url, [broken], timeout=15.0)
    types = [recorded.type for recorded in (await histories(db_url, [broken]))[broken]]
    assert types.count("JobAssigned") == 2 and types[-1] == "JobFailed"


async def test_a_job_that_never_starts_in_time_times_out_in_the_queue(db_url: str) -> None:
    """No BrowserStack slot exists, so the job waits past its queue timeout."""
    agent = agent_config("emulators-only", "emulator:1")
    async with pipeline(db_url, agent):
        [late] = await submit(
            db_url,
            [
                JobSubmitted(
                    org_id="qualgent",
                    app_version_id="1.0",
                    test_path="tests/a.spec.ts",
                    target=Target.BROWSERSTACK,
                    queue_timeout_s=0.3,
                )
            ],
        )
        await wait_all_ended(db_url, [late])

    states = check_histories(await histories(db_url, [late]))
    assert states[late].status == JobStatus.TIMED_OUT
    [stream] = (await histories(db_url, [late])).values()
    timed_out = stream[-1].event
    assert isinstance(timed_out, JobTimedOut) and timed_out.kind == TimeoutKind.QUEUE
    assert timed_out.reason == "did not start within its queue timeout of 0.3 s"


async def test_a_job_running_past_its_timeout_times_out(db_url: str) -> None:
    """A 5 s test with a 0.2 s run timeout ends timed out, after about 0.2 s."""
    agent = agent_config("slow", "emulator:1", simulated={"test_s": 5.0})
    async with pipeline(db_url, agent):
        [slow] = await submit(db_url, [job("slow", timeout_s=0.2)])
        await wait_all_ended(db_url, [slow], timeout=4)

    [stream] = (await histories(db_url, [slow])).values()
    check_histories({slow: stream})
    timed_out = stream[-1].event
    assert isinstance(timed_out, JobTimedOut) and timed_out.kind == TimeoutKind.RUN
    assert timed_out.attempt == 1


async def test_a_browserstack_build_is_uploaded_once_and_its_id_reused(db_url: str) -> None:
    """Two BrowserStack slots run several batches of one app version: one upload,
    recorded as BuildUploaded, and every later install uses its bs:// id."""
    agent = agent_config("cloud", "browserstack:2", policy=ClaimPolicy(min_batch=2, max_batch=2))
    async with pipeline(db_url, agent):
        ids = await submit(
            db_url,
            [
                JobSubmitted(
                    org_id="qualgent",
                    app_version_id="1.0",
                    test_path=f"tests/t{i}.spec.ts",
                    target=Target.BROWSERSTACK,
                    build="https://builds.example/1.0.apk",
                )
                for i in range(8)
            ],
        )
        await wait_all_ended(db_url, ids)

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "select type, data from events where type in ('BuildUploaded', 'AppInstalled') "
            "order by position"
        )
        rows = await cursor.fetchall()
    uploads = [data for kind, data in rows if kind == "BuildUploaded"]
    installs = [data for kind, data in rows if kind == "AppInstalled"]
    assert len(uploads) == 1 and uploads[0]["reference"].startswith("bs://simulated-")
    assert 1 <= len(installs) <= 2, "one install per slot"
