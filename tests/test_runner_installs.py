"""Install affinity on real slots: few installs, and no slower than running jobs in FIFO order."""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest

from ledger.decisions import JobStatus
from ledger.events import JobSubmitted, Target
from runner import ClaimPolicy
from tests.support.runner import (
    agent_config,
    check_histories,
    histories,
    pipeline,
    submit,
    wait_all_ended,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SIMULATED = {"install_s": 0.05, "test_s": 0.005}
#: Per-job FIFO: every job its own group (see one_group_per_job), one job per claim,
#: no preference for the installed app, so the oldest job always goes first.
FIFO = ClaimPolicy(affinity_margin=0, join_cost=0, min_batch=1, max_batch=1)


def one_group_per_job(job: JobSubmitted) -> str:
    """A grouping strategy that groups nothing (each test path is unique here)."""
    return f"job={job.test_path}"


def workload(run: str) -> list[JobSubmitted]:
    # Interleaved app versions, as suites submitted side by side arrive.
    return [
        JobSubmitted(
            org_id="acme",
            app_version_id=f"{run}-app-{i % 10}",
            test_path=f"tests/{run}-{i}.spec.ts",
            target=Target.EMULATOR,
        )
        for i in range(200)
    ]


async def run_workload(
    url: str, run: str, policy: ClaimPolicy, grouping: str | None
) -> tuple[int, float, list[UUID]]:
    """Run the workload on 4 fresh slots; return installs and seconds from first claim to end."""
    config = agent_config(f"{run}-agent", "emulator:4", simulated=SIMULATED, policy=policy)
    async with pipeline(url, config):
        ids = await submit(url, workload(run), grouping=grouping)
        await wait_all_ended(url, ids, timeout=60)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "select count(*) filter (where type = 'AppInstalled'), "
            "extract(epoch from max(recorded_at) filter (where type = 'JobPassed') "
            "  - min(recorded_at) filter (where type = 'JobAssigned')) "
            "from events where metadata ->> 'actor' like %s",
            (f"runner:{run}-agent:%",),
        )
        installs, seconds = await cursor.fetchone() or (0, 0.0)
    return installs, float(seconds), ids


async def test_grouped_claims_install_each_version_about_once_and_beat_fifo(db_url: str) -> None:
    """200 jobs over 10 app versions on 4 slots: at most 10 + 4 installs, and not slower
    than the same workload claimed one job at a time in FIFO order."""
    installs, seconds, ids = await run_workload(db_url, "grouped", ClaimPolicy(), None)
    fifo_installs, fifo_seconds, fifo_ids = await run_workload(
        db_url, "fifo", FIFO, "tests.test_runner_installs:one_group_per_job"
    )

    states = check_histories(await histories(db_url, [*ids, *fifo_ids]))
    assert all(state.status == JobStatus.PASSED for state in states.values())
    assert installs <= 14
    assert fifo_installs > 100
    assert seconds <= fifo_seconds
