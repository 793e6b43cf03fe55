"""Grouping strategies: same key, same group; one grouping per job; custom strategies by name."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.events import JobCancelled, JobGrouped, JobSubmitted, Target
from ledger.store import append, read_stream
from projections import Projector, UnknownStrategy, group_id, rebuild, resolve
from projections.grouping import BUILT_IN
from tests.support.factories import metadata, submitted
from tests.support.projector import connected, fetch, record, types
from tests.support.waiting import async_wait_until

names = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8).filter(lambda s: s[0].isalnum())
jobs = st.builds(
    JobSubmitted,
    org_id=st.sampled_from(["acme", "globex", "acme.eu"]),
    app_version_id=names,
    test_path=names,
    target=st.sampled_from(list(Target)),
    priority=st.integers(1, 10),
    repo=st.none() | st.sampled_from(["github.com/acme/app", "github.com/acme/web"]),
    tags=st.lists(st.sampled_from(["smoke", "login", "pay"]), max_size=3).map(tuple),
)


def by_test_directory(job: JobSubmitted) -> str:
    """A custom strategy, named in tests as ``tests.test_grouping:by_test_directory``."""
    return f"dir={job.test_path.rpartition('/')[0]}"


def refuses_slow_tests(job: JobSubmitted) -> str:
    if "slow" in job.test_path:
        raise RuntimeError("no group for slow tests")
    return "all"


@given(strategy=st.sampled_from(list(BUILT_IN)), a=jobs, b=jobs)
def test_jobs_with_the_same_key_share_a_group_and_different_keys_never_do(
    strategy: str, a: JobSubmitted, b: JobSubmitted
) -> None:
    grouping = resolve(strategy)
    same_key = grouping.key(a) == grouping.key(b)
    assert (grouping.group(a).group_id == grouping.group(b).group_id) == same_key


@given(strategy=st.sampled_from(list(BUILT_IN)), a=jobs, b=jobs)
def test_jobs_of_different_orgs_or_targets_never_share_a_group(
    strategy: str, a: JobSubmitted, b: JobSubmitted
) -> None:
    grouping = resolve(strategy)
    if (a.org_id, a.target) != (b.org_id, b.target):
        assert grouping.group(a).group_id != grouping.group(b).group_id


@given(job=jobs)
def test_the_default_strategy_groups_by_org_app_version_and_target(job: JobSubmitted) -> None:
    grouped = resolve().group(job)
    assert grouped.strategy == "app_version"
    assert grouped.group_key == f"{job.org_id}|{job.target}|app_version={job.app_version_id}"
    assert grouped.group_id == group_id("app_version", grouped.group_key)


def test_the_built_in_strategies_key_on_repo_first_tag_and_priority_band() -> None:
    job = submitted(repo="github.com/acme/app", tags=("smoke", "login"), priority=9)
    bare = submitted(priority=2)
    assert resolve("repo").key(job) == "qualgent|device|repo=github.com/acme/app"
    assert resolve("repo").key(bare) == "qualgent|device|app_version=xyz123"
    assert resolve("tag").key(job) == "qualgent|device|tag=smoke"
    assert resolve("tag").key(bare) == "qualgent|device|app_version=xyz123"
    assert resolve("priority").key(job) == "qualgent|device|priority=high"
    assert resolve("priority").key(bare) == "qualgent|device|priority=low"
    assert resolve("priority").key(submitted(priority=5)) == "qualgent|device|priority=normal"


def test_the_strategy_comes_from_qgjob_grouping_when_not_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QGJOB_GROUPING", "tag")
    assert resolve().name == "tag"
    assert resolve("repo").name == "repo"


def test_a_custom_strategy_is_named_by_import_path() -> None:
    grouping = resolve("tests.test_grouping:by_test_directory")
    grouped = grouping.group(submitted(test_path="tests/login/a.spec.js"))
    assert grouped.strategy == "tests.test_grouping:by_test_directory"
    assert grouped.group_key == "qualgent|device|dir=tests/login"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fastest", "unknown grouping strategy 'fastest': use one of app_version, repo, tag"),
        ("no_such_module:key", "cannot import 'no_such_module'"),
        ("tests.test_grouping:missing", "tests.test_grouping has no callable 'missing'"),
        ("tests.test_grouping:names", "tests.test_grouping has no callable 'names'"),
    ],
)
def test_an_unknown_strategy_is_a_clear_error_when_the_projector_is_made(
    name: str, message: str
) -> None:
    with pytest.raises(UnknownStrategy, match=message):
        Projector("postgresql:///unused", grouping=name)


def test_qgjobd_projector_refuses_an_unknown_strategy_at_startup(
    db_url: str, repo_root: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "qgjobd.py", "projector", "--grouping", "fastest"],
        cwd=repo_root,
        env={"QGJOB_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "qgjobd: unknown grouping strategy 'fastest'" in result.stderr


@pytest.mark.anyio
async def test_the_projector_groups_with_a_custom_strategy(db_url: str) -> None:
    login, login_too, pay = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with connected(db_url) as conn:
        await record(conn, login, submitted(test_path="login/a.spec.js", app_version_id="v1"))
        await record(conn, login_too, submitted(test_path="login/b.spec.js", app_version_id="v2"))
        await record(conn, pay, submitted(test_path="pay/a.spec.js", app_version_id="v1"))
        await Projector(db_url, grouping="tests.test_grouping:by_test_directory").catch_up()
        rows = await fetch(conn, "select job_id, group_id from jobs")
        group_of = {row["job_id"]: row["group_id"] for row in rows}
        assert group_of[login] == group_of[login_too] != group_of[pay]
        groups = await fetch(
            conn, "select group_key, app_version_id, queued from groups order by 1"
        )
        # The login group's jobs test two builds, so the group has no single app version.
        assert groups == [
            {"group_key": "qualgent|device|dir=login", "app_version_id": None, "queued": 2},
            {"group_key": "qualgent|device|dir=pay", "app_version_id": "v1", "queued": 1},
        ]


@pytest.mark.anyio
async def test_a_strategy_failing_for_one_job_leaves_it_ungrouped_and_groups_the_rest(
    db_url: str,
) -> None:
    slow, fast = uuid.uuid4(), uuid.uuid4()
    async with connected(db_url) as conn:
        await record(conn, slow, submitted(test_path="slow.spec.js"))
        await record(conn, fast, submitted(test_path="fast.spec.js"))
        await Projector(db_url, grouping="tests.test_grouping:refuses_slow_tests").catch_up()
        assert types(await read_stream(conn, slow)) == ["JobSubmitted"]
        assert types(await read_stream(conn, fast)) == ["JobSubmitted", "JobGrouped"]


@pytest.mark.anyio
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=3), max_size=3))
async def test_a_job_is_grouped_exactly_once_however_many_projectors_and_rebuilds_run(
    db_url: str, rounds: list[list[int]]
) -> None:
    submitted_jobs = [uuid.uuid4() for _ in range(12)]
    async with connected(db_url) as conn:
        for job in submitted_jobs:
            await record(conn, job, submitted(app_version_id=f"v{job.int % 2}"))
        for sizes in rounds:
            appliers = [Projector(db_url, batch_size=size).catch_up() for size in sizes]
            await asyncio.gather(*appliers, rebuild(db_url, batch_size=sizes[0]))
        await Projector(db_url).catch_up()
        for job in submitted_jobs:
            events = await read_stream(conn, job)
            assert [type(e.event) for e in events] == [JobSubmitted, JobGrouped]


@pytest.mark.anyio
async def test_a_job_cancelled_while_being_grouped_is_skipped_and_the_others_are_grouped(
    db_url: str,
) -> None:
    racing, other = uuid.uuid4(), uuid.uuid4()
    async with connected(db_url) as conn, await psycopg.AsyncConnection.connect(db_url) as api:
        await record(conn, racing, submitted())
        await record(conn, other, submitted())
        async with api.transaction():
            # The cancel holds version 2 of the job's stream, uncommitted, while the
            # projector appends JobGrouped at version 2 for both jobs in one statement.
            await append(api, racing, 1, [JobCancelled()], metadata())
            grouping = asyncio.create_task(Projector(db_url).catch_up())

            async def projector_waits() -> bool:
                rows = await fetch(
                    conn,
                    "select 1 from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock'",
                )
                return bool(rows)

            await async_wait_until(projector_waits, what="the projector to wait on the cancel")
        await grouping
        await Projector(db_url).catch_up()
        assert types(await read_stream(conn, racing)) == ["JobSubmitted", "JobCancelled"]
        assert types(await read_stream(conn, other)) == ["JobSubmitted", "JobGrouped"]
        statuses = await fetch(conn, "select job_id, status from jobs")
        assert {row["job_id"]: row["status"] for row in statuses} == {
            racing: "cancelled",
            other: "grouped",
        }
