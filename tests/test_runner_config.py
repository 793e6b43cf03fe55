"""The runner's configuration (TOML and flags) and its retry rules."""

from __future__ import annotations

import argparse
import datetime as dt
import random
import uuid
from pathlib import Path

import pytest

from ledger.decisions import JobState, JobStatus, decide
from ledger.errors import TransitionRefused
from ledger.events import FailureKind, JobFailed, JobPassed, JobRetryScheduled, JobTimedOut
from runner.cli import add_arguments, config_from_args
from runner.config import ConfigError, RetryPolicy, load_config, make_executor, slots_from_spec
from runner.executors import AppWrightExecutor, Outcome, SimulatedExecutor, SlotSpec
from runner.jobs import HeldJob, backoff_s, hand_back, outcome_events

TOML = """
name = "lab-1"
executor = "appwright"
lease_ttl_s = 5

[[slots]]
name = "pixel-8"
target = "emulator"
capabilities = { platform = "android", osVersion = "14" }

[[slots]]
name = "bs-1"
target = "browserstack"

[appwright]
project_dir = "/srv/e2e"
build_template = "builds/{app_version_id}.apk"
work_dir = "/var/lib/qgjob/runs"

[policy]
min_batch = 4

[org_limits]
acme = 2
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_a_toml_file_describes_slots_executor_policy_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "runner.toml"
    path.write_text(TOML, encoding="utf-8")

    config = load_config(path)

    assert config.name == "lab-1" and config.lease_ttl_s == 5
    assert config.slots == (
        SlotSpec(
            name="pixel-8",
            target="emulator",
            capabilities={"platform": "android", "osVersion": "14"},
        ),
        SlotSpec(name="bs-1", target="browserstack"),
    )
    assert config.policy.min_batch == 4 and config.org_limits == {"acme": 2}
    executor = make_executor(config)
    assert isinstance(executor, AppWrightExecutor)
    assert executor.build_template == "builds/{app_version_id}.apk"


def test_flags_override_the_file_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "runner.toml"
    path.write_text(TOML, encoding="utf-8")

    config = config_from_args(
        parse("--config", str(path), "--max-batch", "20", "--org-limit", "globex=1")
    )

    assert config.policy.min_batch == 4 and config.policy.max_batch == 20
    assert config.org_limits == {"acme": 2, "globex": 1}


def test_flags_alone_make_a_simulated_agent() -> None:
    config = config_from_args(
        parse("--slots", "emulator:2,device,browserstack:1", "--simulated", "test_s=0.5,seed=7")
    )

    assert [(s.name, s.target) for s in config.slots] == [
        ("emulator-1", "emulator"),
        ("emulator-2", "emulator"),
        ("device-1", "device"),
        ("browserstack-1", "browserstack"),
    ]
    executor = make_executor(config)
    assert isinstance(executor, SimulatedExecutor)
    assert (executor.test_s, executor.seed) == (0.5, 7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give --slots"),
        (("--slots", "phone:2"), "bad slot spec 'phone:2'"),
        (("--slots", "emulator", "--org-limit", "acme"), "--org-limit 'acme': use ORG=N"),
        (("--slots", "emulator", "--simulated", "speed=3"), "unknown simulated executor option"),
        (("--slots", "emulator", "--lease-ttl", "0"), "lease_ttl_s"),
        (("--slots", "emulator", "--executor", "appwright"), "needs appwright.project_dir"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(
    argv: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(parse(*argv))


def test_unknown_keys_and_duplicate_slots_in_a_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "runner.toml"
    path.write_text(TOML.replace("lease_ttl_s", "lease_tll_s"), encoding="utf-8")
    with pytest.raises(ConfigError, match="lease_tll_s"):
        load_config(path)
    path.write_text(TOML.replace('"bs-1"', '"pixel-8"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="unique"):
        load_config(path)


def test_slot_specs_count_per_target() -> None:
    assert [s.name for s in slots_from_spec("device:3")] == ["device-1", "device-2", "device-3"]


# ---- how attempts end -----------------------------------------------------------------

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
RETRY = RetryPolicy(infra_attempts=3, backoff_s=2.0, backoff_cap_s=60.0)


def held(attempt: int, max_attempts: int = 1, handed_back: int = 0) -> HeldJob:
    """A job on its *attempt*-th attempt, *handed_back* of the earlier ones handed back."""
    state = JobState(
        version=3, status=JobStatus.RUNNING, attempt=attempt, max_attempts=max_attempts
    )
    return HeldJob(
        job_id=uuid.uuid4(),
        org_id="acme",
        test_path="tests/a.spec.ts",
        build=None,
        timeout_s=60,
        max_attempts=max_attempts,
        handed_back=handed_back,
        state=state,
        version=3,
    )


def outcome(job: HeldJob, status: str) -> Outcome:
    return Outcome(job_id=job.job_id, status=status, message="why", duration_s=1.5)  # type: ignore[arg-type]


def ends(job: HeldJob, status: str) -> list[type]:
    events = outcome_events(
        job,
        outcome(job, status),
        policy=RETRY,
        now=NOW,
        rng=random.Random(1),
    )
    return [type(e) for e in events]


def test_a_test_failure_is_final_unless_the_job_allows_more_attempts() -> None:
    assert ends(held(1), "failed") == [JobFailed]
    assert ends(held(1, max_attempts=2), "failed") == [JobFailed, JobRetryScheduled]
    assert ends(held(2, max_attempts=2), "failed") == [JobFailed]


def test_infrastructure_errors_retry_up_to_the_runner_limit_not_counting_hand_backs() -> None:
    assert ends(held(2), "error") == [JobFailed, JobRetryScheduled]
    assert ends(held(3), "error") == [JobFailed]
    assert ends(held(4, handed_back=2), "error") == [JobFailed, JobRetryScheduled]
    assert ends(held(4, max_attempts=5), "error") == [JobFailed, JobRetryScheduled]
    job = held(1)
    [failed, _] = outcome_events(
        job, outcome(job, "error"), policy=RETRY, now=NOW, rng=random.Random()
    )
    assert isinstance(failed, JobFailed) and failed.kind == FailureKind.INFRASTRUCTURE


def test_passes_and_run_timeouts_are_final() -> None:
    assert ends(held(1), "passed") == [JobPassed]
    assert ends(held(1, max_attempts=3), "timed_out") == [JobTimedOut]


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for attempt, base in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delay = backoff_s(attempt, RETRY, rng)
        assert base * 0.5 <= delay <= base * 1.5


def test_a_hand_back_is_allowed_only_for_the_attempt_on_a_device() -> None:
    """A hand-back needs no failure before it, but only the current attempt on a device
    can be handed back."""
    job = held(2)
    [hand_back_event] = hand_back(job, "draining", NOW)
    assert isinstance(hand_back_event, JobRetryScheduled) and hand_back_event.handed_back
    assert decide(job.state, hand_back_event).status == JobStatus.RETRYING
    with pytest.raises(TransitionRefused, match="attempt 2 is not the current attempt"):
        decide(held(3).state, hand_back_event)
    retrying = JobState(version=6, status=JobStatus.RETRYING, attempt=2)
    with pytest.raises(TransitionRefused, match="the job is retrying"):
        decide(retrying, hand_back_event)
