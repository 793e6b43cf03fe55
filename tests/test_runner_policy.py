"""The claim policy as pure functions: ranking, batch sizes, the ageing bound."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from runner.policy import (
    ClaimPolicy,
    QueuedGroup,
    ageing_bound_s,
    batch_size,
    effective_priority,
    group_priority,
    rank_groups,
)

POLICY = ClaimPolicy()


def group(
    name: str,
    *,
    priority: int = 5,
    waited: float = 0.0,
    queued: int = 20,
    active: int = 0,
    app: str | None = None,
) -> QueuedGroup:
    return QueuedGroup(
        group_id=name,
        org_id="acme",
        app_version_id=app or name,
        queued=queued,
        waits=((priority, waited),),
        active_slots=active,
    )


def names(groups: list[QueuedGroup]) -> list[object]:
    return [g.group_id for g in groups]


def test_the_installed_app_comes_first_within_the_affinity_margin() -> None:
    """An install is worth up to four points: a group of priority 9 waits for the slot's
    own group of priority 5 to be done, one of priority 10 does not."""
    ranked = rank_groups(
        [group("close", priority=9), group("mine", priority=5)],
        installed={"mine"},
        policy=POLICY,
    )
    assert names(ranked) == ["mine", "close"]
    ranked = rank_groups(
        [group("urgent", priority=10), group("mine", priority=5)],
        installed={"mine"},
        policy=POLICY,
    )
    assert names(ranked) == ["urgent", "mine"]


def test_affinity_gives_way_once_another_group_is_ahead_by_more_than_the_margin() -> None:
    # 2 + 13 points of waiting: more than 4 (the margin) above the installed group.
    old = group("old", priority=2, waited=13 / POLICY.ageing_per_s)
    ranked = rank_groups([group("mine", priority=10), old], installed={"mine"}, policy=POLICY)
    assert names(ranked) == ["old", "mine"]


def test_higher_priority_first_then_bigger_groups_then_age() -> None:
    ranked = rank_groups(
        [
            group("small-old", queued=3, waited=60),
            group("big", queued=50),
            group("high", priority=8, queued=1),
        ],
        installed=set(),
        policy=POLICY,
    )
    assert names(ranked) == ["high", "big", "small-old"]


def test_a_fresh_group_comes_before_joining_one_that_runs_elsewhere() -> None:
    ranked = rank_groups(
        [group("shared", priority=7, active=1, queued=80), group("fresh", priority=5)],
        installed=set(),
        policy=POLICY,
    )
    assert names(ranked) == ["fresh", "shared"]


def test_a_slot_joins_a_shared_group_rather_than_idle() -> None:
    ranked = rank_groups([group("shared", active=3, queued=2)], installed=set(), policy=POLICY)
    assert names(ranked) == ["shared"]


def test_batches_are_chunks_of_a_group_and_joiners_take_a_fair_share() -> None:
    big = group("big", queued=100)
    assert batch_size(big, target_slots=4, installed=set(), policy=POLICY) == 25
    assert batch_size(big, target_slots=40, installed=set(), policy=POLICY) == POLICY.min_batch
    shared = group("big", queued=100, active=3)
    assert batch_size(shared, target_slots=8, installed=set(), policy=POLICY) == 25
    assert batch_size(group("tiny", queued=3), target_slots=8, installed=set(), policy=POLICY) == 3
    huge = group("huge", queued=10_000)
    assert batch_size(huge, target_slots=1, installed=set(), policy=POLICY) == POLICY.max_batch


def test_the_ageing_bound_with_the_defaults_is_seventy_minutes_for_priority_1() -> None:
    assert ageing_bound_s(1, POLICY) == 70 * 60


groups = st.builds(
    QueuedGroup,
    group_id=st.uuids(),
    org_id=st.just("acme"),
    app_version_id=st.sampled_from(["a", "b", "c"]),
    queued=st.integers(1, 200),
    waits=st.lists(
        st.tuples(st.integers(1, 10), st.floats(0, 100_000)), min_size=1, max_size=3
    ).map(tuple),
    active_slots=st.integers(0, 8),
)
policies = st.builds(
    ClaimPolicy,
    ageing_per_s=st.floats(0.0001, 10),
    affinity_margin=st.floats(0, 20),
    join_cost=st.floats(0, 10),
    min_batch=st.integers(1, 20),
    max_batch=st.integers(1, 200),
)


@given(st.lists(groups, max_size=12), st.sets(st.sampled_from(["a", "b", "c"])), policies)
def test_ranking_keeps_every_group(
    queue: list[QueuedGroup], installed: set[str], policy: ClaimPolicy
) -> None:
    ranked = rank_groups(queue, installed=installed, policy=policy)
    assert sorted(map(id, ranked)) == sorted(map(id, queue))


@given(groups, st.integers(1, 64), st.sets(st.sampled_from(["a", "b", "c"])), policies)
def test_a_batch_is_never_empty_nor_more_than_allowed(
    queued: QueuedGroup, slots: int, installed: set[str], policy: ClaimPolicy
) -> None:
    size = batch_size(queued, target_slots=slots, installed=installed, policy=policy)
    assert 1 <= size <= min(queued.queued, policy.max_batch)
    assert size >= min(queued.queued, policy.min_batch, policy.max_batch)


@given(
    st.integers(1, 10),
    st.integers(1, 10),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
    st.booleans(),
    st.integers(1, 200),
    policies,
)
def test_no_job_submitted_after_the_ageing_bound_overtakes_an_older_one(
    old_priority: int,
    new_priority: int,
    old_waited: float,
    later_by: float,
    new_is_installed: bool,
    new_queued: int,
    policy: ClaimPolicy,
) -> None:
    """The bound in runner/policy.py: a group whose jobs all came more than
    ageing_bound_s(p) after a job of priority p never ranks above that job's group, for
    any affinity and sizes (unless that group runs elsewhere already)."""
    later_by += ageing_bound_s(old_priority, policy) * (1 + 1e-9) + 1e-6
    new_waited = old_waited - later_by
    if new_waited < 0:
        old_waited, new_waited = later_by, 0.0
    old = group("old", priority=old_priority, waited=old_waited, queued=1, app="a")
    new = group("new", priority=new_priority, waited=new_waited, queued=new_queued, app="b")
    installed = {"b"} if new_is_installed else set()
    assert effective_priority(old_priority, old_waited, policy) == group_priority(old, policy)
    ranked = rank_groups([new, old], installed=installed, policy=policy)
    assert names(ranked)[0] == "old", (group_priority(old, policy), group_priority(new, policy))
    assert not math.isnan(group_priority(new, policy))
