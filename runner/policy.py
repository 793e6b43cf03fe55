"""The claim policy: which queued group an idle slot takes next, and how much of it.

Pure functions over a summary of the queue, so the real claim (runner/claim.py) and the
scheduling simulation (bench/scheduling.py) rank groups with the same code.

A slot considers the groups queued for its target and ranks them by, in order:

1. **install affinity** — a group whose app version is installed on the slot comes
   first, unless another group's effective priority is higher by more than
   ``affinity_margin`` (4 points by default): an install costs a minute, but a suite of
   a clearly higher priority (9 over 4, or one that waited 20 minutes longer) does not
   wait behind a lower one for the sake of it. bench/scheduling.py measures the rule: on
   a queue filled at once it costs no install more than the whole-range margin did, and
   with suites arriving over time the high class waits under half as long as the low;
2. **worth joining** — a group other slots are already running, that would leave the
   slot fewer than ``min_batch`` jobs of its fair share, comes last (but still before
   idling: a slot never idles while a runnable job for its target waits);
3. **priority band** — the effective priority rounded down to a whole point, where a
   job's effective priority is its priority plus ``ageing_per_s`` points per second it
   has waited (a group's is the best of its queued jobs'); a group already running on
   other slots counts ``join_cost`` points less here, since joining it costs an install
   and only shortens its tail;
4. **fresh before shared** — within a band, a group no other slot is running first;
5. **bigger first** — more queued jobs first, so the last groups to run are small ones;
6. the exact effective priority, then age.

Batches are chunks, not whole groups: a slot takes ``ceil(queued / slots of its
target)`` jobs (at least ``min_batch``, at most ``max_batch``), and a slot joining a
group that runs elsewhere takes its fair share of what is left. The slot that
installed the app keeps coming back for the next chunk (affinity), so chunking costs a
claim, not an install, while leaving work queued that idle slots can split off when
the queue runs dry: a large group is split only when a slot would otherwise idle or
its priority says so.

**The ageing bound.** Let ``M = max(affinity_margin, join_cost + 1)``. A group ranks
above another only if its effective priority is at least the other's minus ``M`` (the
``+ 1`` is the banding); rank 2 aside, which only defers a group that other slots are
already running. So a job of priority ``p`` is overtaken only by jobs submitted less
than ``(PRIORITY_MAX - p + M) / ageing_per_s`` seconds after it (``ageing_bound_s``):
70 minutes for priority 1 with the defaults (a point per 5 minutes, M = 5). Its wait
is then bounded by that window plus the time to run the work queued before it, so
nothing starves.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence

import attrs
from attrs import validators

from ledger.events import PRIORITY_MAX

__all__ = [
    "ClaimPolicy",
    "QueuedGroup",
    "ageing_bound_s",
    "batch_size",
    "effective_priority",
    "group_priority",
    "rank_groups",
]


@attrs.frozen(kw_only=True)
class ClaimPolicy:
    """How slots choose groups and size batches."""

    #: Priority points a job gains per second it waits; must be > 0 so nothing starves.
    ageing_per_s: float = attrs.field(default=1 / 300, validator=validators.gt(0))
    #: How many points of effective priority install affinity is worth.
    affinity_margin: float = attrs.field(default=4.0, validator=validators.ge(0))
    #: Priority points a group loses, for ranking, while other slots are running it.
    join_cost: float = attrs.field(default=4.0, validator=validators.ge(0))
    #: The smallest batch worth an install, unless the group has fewer jobs queued. An
    #: install takes about as long as two or three tests; 16 keeps it a small share.
    min_batch: int = attrs.field(default=16, validator=validators.ge(1))
    #: The largest batch one claim takes.
    max_batch: int = attrs.field(default=100, validator=validators.ge(1))


@attrs.frozen(kw_only=True)
class QueuedGroup:
    """What the queue holds for one group, as seen by a slot about to claim."""

    group_id: Hashable
    org_id: str
    app_version_id: str
    #: Runnable queued jobs.
    queued: int
    #: For each priority present among them: (priority, seconds its oldest job has waited).
    waits: tuple[tuple[int, float], ...]
    #: Other slots running a batch of this group right now.
    active_slots: int = 0


def effective_priority(priority: int, waited_s: float, policy: ClaimPolicy) -> float:
    """A job's priority after waiting *waited_s* seconds."""
    return priority + policy.ageing_per_s * waited_s


def group_priority(group: QueuedGroup, policy: ClaimPolicy) -> float:
    """The best effective priority among the group's queued jobs."""
    return max(effective_priority(p, waited, policy) for p, waited in group.waits)


def ageing_bound_s(priority: int, policy: ClaimPolicy) -> float:
    """After this long, no job submitted later can overtake a job of *priority*."""
    margin = max(policy.affinity_margin, policy.join_cost + 1)
    return (PRIORITY_MAX - priority + margin) / policy.ageing_per_s


def _fair_share(group: QueuedGroup) -> int:
    return math.ceil(group.queued / (group.active_slots + 1))


def rank_groups(
    groups: Sequence[QueuedGroup], *, installed: Collection[str], policy: ClaimPolicy
) -> list[QueuedGroup]:
    """*groups* best first for a slot with the *installed* app versions."""
    if not groups:
        return []
    priorities = {id(g): group_priority(g, policy) for g in groups}
    best = max(priorities.values())

    def key(group: QueuedGroup) -> tuple[bool, bool, int, bool, int, float, float]:
        eff = priorities[id(group)]
        affine = group.app_version_id in installed and eff >= best - policy.affinity_margin
        fresh = group.active_slots == 0
        worth_splitting = fresh or affine or _fair_share(group) >= policy.min_batch
        oldest = max(waited for _, waited in group.waits)
        band = math.floor(eff if fresh else eff - policy.join_cost)
        return (affine, worth_splitting, band, fresh, group.queued, eff, oldest)

    return sorted(groups, key=key, reverse=True)


def batch_size(
    group: QueuedGroup, *, target_slots: int, installed: Collection[str], policy: ClaimPolicy
) -> int:
    """How many of the group's queued jobs one claim takes."""
    if group.active_slots and group.app_version_id not in installed:
        share = _fair_share(group)
    else:
        share = math.ceil(group.queued / max(1, target_slots))
    return min(group.queued, policy.max_batch, max(policy.min_batch, share))
