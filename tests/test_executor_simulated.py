"""The simulated executor: deterministic verdicts and timings, no devices."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from runner.executors import Batch, BatchJob, Executor, Outcome, SimulatedExecutor, SlotSpec
from tests.support.executors import RecordingReporter

pytestmark = pytest.mark.anyio

EMULATOR = SlotSpec(name="emu-1", target="emulator", capabilities={"platform": "android"})
BROWSERSTACK = SlotSpec(name="bs-1", target="browserstack")


def jobs(n: int, *, attempt: int = 1, test_path: str = "tests/login.spec.ts") -> list[BatchJob]:
    return [
        BatchJob(job_id=uuid.UUID(int=i + 1), test_path=test_path, attempt=attempt)
        for i in range(n)
    ]


async def run(
    executor: SimulatedExecutor, batch_jobs: list[BatchJob], timeout_s: float = 1e9
) -> list[Outcome]:
    reporter = RecordingReporter()
    batch = Batch(slot=EMULATOR, app_version_id="1.0", jobs=tuple(batch_jobs), timeout_s=timeout_s)
    await executor.run(batch, reporter)
    assert [o.job_id for o in reporter.outcomes_in_order] == [j.job_id for j in batch_jobs]
    return reporter.outcomes_in_order


def simulated(**options: Any) -> SimulatedExecutor:
    return SimulatedExecutor(**{"time_scale": 0, **options})


def test_the_executor_satisfies_the_protocol() -> None:
    executor: Executor = SimulatedExecutor()
    assert executor.name == "simulated"


async def test_the_same_seed_gives_the_same_verdicts() -> None:
    options = {"failure_rate": 0.3, "flake_rate": 0.3}
    first = await run(simulated(seed=7, **options), jobs(200))
    again = await run(simulated(seed=7, **options), jobs(200))
    other = await run(simulated(seed=8, **options), jobs(200))

    assert [o.status for o in first] == [o.status for o in again]
    assert [o.status for o in first] != [o.status for o in other]


async def test_every_outcome_is_labelled_simulated() -> None:
    outcomes = await run(simulated(failure_rate=0.5), jobs(20))
    assert {o.status for o in outcomes} == {"passed", "failed"}
    assert all(o.message.startswith("simulated: ") for o in outcomes)
    assert all(o.output.startswith("[simulated] ") for o in outcomes)


async def test_failure_rate_fails_a_broken_test_on_every_attempt() -> None:
    executor = simulated(failure_rate=0.25, seed=3)
    first = await run(executor, jobs(2000, attempt=1))
    second = await run(executor, jobs(2000, attempt=2))

    failed_first = {o.job_id for o in first if o.status == "failed"}
    assert failed_first == {o.job_id for o in second if o.status == "failed"}
    assert 0.2 < len(failed_first) / 2000 < 0.3
    assert all("failure_rate" in o.message for o in first if o.status == "failed")


async def test_flake_rate_fails_the_first_attempt_only() -> None:
    executor = simulated(flake_rate=1.0)
    assert {o.status for o in await run(executor, jobs(10, attempt=1))} == {"failed"}
    assert {o.status for o in await run(executor, jobs(10, attempt=2))} == {"passed"}


async def test_a_spec_path_containing_fail_always_fails() -> None:
    for attempt in (1, 2, 3):
        outcomes = await run(simulated(), jobs(3, attempt=attempt, test_path="tests/MustFAIL.ts"))
        assert {o.status for o in outcomes} == {"failed"}
        assert "spec path contains 'fail'" in outcomes[0].message


async def test_jobs_past_the_batch_timeout_time_out() -> None:
    reporter = RecordingReporter()
    batch_jobs = jobs(3)
    batch = Batch(slot=EMULATOR, app_version_id="1.0", jobs=tuple(batch_jobs), timeout_s=25)

    await simulated(test_s=10).run(batch, reporter)

    assert [o.status for o in reporter.outcomes_in_order] == ["passed", "passed", "timed_out"]
    assert reporter.outcomes_in_order[2].duration_s == 5
    started = [value for kind, value in reporter.events if kind == "started"]
    assert started == [job.job_id for job in batch_jobs]


async def test_zero_time_scale_never_sleeps() -> None:
    began = time.monotonic()
    outcomes = await run(simulated(install_s=600, test_s=600), jobs(2000))
    await simulated(install_s=600).install(EMULATOR, "1.0", None)
    assert time.monotonic() - began < 2.0
    assert outcomes[0].duration_s == 600


async def test_durations_are_scaled_by_time_scale() -> None:
    began = time.monotonic()
    await run(simulated(test_s=10, time_scale=0.01), jobs(3))
    assert time.monotonic() - began >= 0.3


async def test_cancelling_a_run_stops_it_promptly() -> None:
    reporter = RecordingReporter()
    batch = Batch(slot=EMULATOR, app_version_id="1.0", jobs=tuple(jobs(2)), timeout_s=1e9)
    task = asyncio.create_task(SimulatedExecutor(test_s=3600).run(batch, reporter))
    deadline = time.monotonic() + 5
    while not reporter.events:
        assert time.monotonic() < deadline, "the run never started"
        await asyncio.sleep(0.01)

    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - cancelled_at < 0.5
    assert reporter.outcomes_in_order == []


async def test_browserstack_installs_upload_once_and_return_a_simulated_id() -> None:
    executor = simulated()
    reference = await executor.install(BROWSERSTACK, "1.0", None)
    assert reference is not None and reference.startswith("bs://simulated-")
    assert await executor.install(BROWSERSTACK, "1.0", reference) == reference
    assert await executor.install(EMULATOR, "1.0", None) is None


def test_options_from_strings() -> None:
    executor = SimulatedExecutor.from_spec("install_s=1.5, test_s=2,failure_rate=0.1,seed=9")
    assert executor == SimulatedExecutor(install_s=1.5, test_s=2, failure_rate=0.1, seed=9)
    assert SimulatedExecutor.from_options({"time_scale": "0"}).time_scale == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("speed=2", "unknown simulated executor option(s) speed"),
        ("failure_rate=2", "failure_rate"),
        ("test_s=-1", "test_s"),
        ("seed=abc", "bad simulated executor option"),
        ("test_s", "is not key=value"),
    ],
)
def test_bad_options_are_refused_by_name(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SimulatedExecutor.from_spec(spec)
