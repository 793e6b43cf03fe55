"""Grouping strategies: same key, same group; what a job needs is in the key; custom
strategies by name. (The API groups as it submits: tests/test_api_submit.py.)"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.capabilities import Platform
from ledger.events import JobSubmitted, Target
from ledger.grouping import BUILT_IN, UnknownStrategy, group_id, resolve
from tests.support.factories import submitted

names = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8).filter(lambda s: s[0].isalnum())
jobs = st.builds(
    JobSubmitted,
    org_id=st.sampled_from(["acme", "globex", "acme.eu"]),
    app_version_id=names,
    test_path=names,
    target=st.sampled_from(list(Target)),
    priority=st.integers(1, 10),
    platform=st.none() | st.sampled_from(list(Platform)),
    device=st.none() | st.sampled_from(["Pixel 8", "iPhone 15"]),
    repo=st.none() | st.sampled_from(["github.com/acme/app", "github.com/acme/web"]),
    tags=st.lists(st.sampled_from(["smoke", "login", "pay"]), max_size=3).map(tuple),
)


def by_test_directory(job: JobSubmitted) -> str:
    """A custom strategy, named in tests as ``tests.test_grouping:by_test_directory``."""
    return f"dir={job.test_path.rpartition('/')[0]}"


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


@given(strategy=st.sampled_from(list(BUILT_IN)), a=jobs, b=jobs)
def test_jobs_that_need_different_devices_never_share_a_group(
    strategy: str, a: JobSubmitted, b: JobSubmitted
) -> None:
    grouping = resolve(strategy)
    if a.profile != b.profile:
        assert grouping.group(a).group_id != grouping.group(b).group_id


@given(job=jobs)
def test_the_default_strategy_groups_by_org_target_needs_and_app_version(
    job: JobSubmitted,
) -> None:
    job = attrs.evolve(job, platform=None, device=None)
    grouped = resolve().group(job)
    assert grouped.strategy == "app_version"
    assert grouped.group_key == f"{job.org_id}|{job.target}|app_version={job.app_version_id}"
    assert grouped.group_id == group_id("app_version", grouped.group_key)


def test_what_a_job_needs_of_the_device_is_part_of_its_group_key() -> None:
    job = submitted(platform=Platform.ANDROID, device="Pixel 8", os_version="14")
    assert resolve().key(job) == (
        "qualgent|device|platform=android,device=Pixel 8,os_version=14|app_version=xyz123"
    )


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
def test_an_unknown_strategy_is_a_clear_error(name: str, message: str) -> None:
    with pytest.raises(UnknownStrategy, match=message):
        resolve(name)
