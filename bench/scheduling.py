"""The claim policy in a discrete-event simulation, against FIFO and strict grouping.

A fixed-seed workload — 2,000 jobs in 40 suites of 20 to 80 tests, one app version
each, from 3 orgs, 30 % of suites low priority, 50 % normal, 20 % high; test times
log-normal around 20 s; 45 s per install — is run on 8 simulated slots of one target
twice: queued all at once (a nightly run), and arriving suite by suite over the first
hour (pull requests through a working day, compressed), which keeps the fleet busy
while new suites of every priority come in. Each under three policies:

- ``qgjob``: runner/policy.py's ranking and batch sizing, the very functions the real
  claim uses (the ordering of jobs inside a group mirrors claim.sql: effective priority,
  then submission order);
- ``fifo``: each free slot takes the oldest job, one at a time, installing whenever the
  app differs;
- ``strict``: the same ranking, but a slot takes a whole group and never splits one.

It prints installs, makespan, p95 wait per priority class and max wait for each, and
the lower bounds: installs >= distinct (app version, target) pairs; makespan >=
max(total work / slots, the latest submit plus its job), where total work is every test
plus one install per pair. Last line: ``RESULT at_once_installs_ratio=…
at_once_makespan_ratio=…`` for the queue filled at once, then ``installs_ratio=…
makespan_ratio=… high_low_p95_ratio=… fifo_installs_ratio=… fifo_makespan_ratio=…`` for
the arriving workload, ``high_low_p95_ratio`` being the high class's p95 wait over the
low class's.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.policy import (
    ClaimPolicy,
    QueuedGroup,
    batch_size,
    effective_priority,
    rank_groups,
)

SEED = 20240611
JOBS = 2_000
SUITES = 40
ORGS = ("acme", "globex", "initech")
#: (name, priority, share of suites)
CLASSES = (("low", 2, 0.3), ("normal", 5, 0.5), ("high", 9, 0.2))
SLOTS = 8
INSTALL_S = 45.0
MEDIAN_TEST_S = 20.0
POLICY = ClaimPolicy()
#: Suites of the arriving workload come in over this many seconds.
ARRIVALS_S = 3600.0


@attrs.frozen(kw_only=True)
class Job:
    index: int
    suite: int
    org_id: str
    app_version_id: str
    priority: int
    submitted_at: float
    duration_s: float


@attrs.define
class Run:
    """What one policy made of the workload."""

    installs: int = 0
    makespan_s: float = 0.0
    waits: dict[int, list[float]] = attrs.field(factory=lambda: defaultdict(list))


def workload(seed: int = SEED, *, arrivals_s: float = 0.0) -> list[Job]:
    """The jobs; with *arrivals_s*, each suite is submitted at a random time in it."""
    rng = random.Random(seed)
    # Suites of 20 to 80 tests, 2,000 in all.
    weights = [rng.uniform(0.4, 1.6) for _ in range(SUITES)]
    bounds = [round(JOBS * sum(weights[:i]) / sum(weights)) for i in range(SUITES + 1)]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    jobs: list[Job] = []
    for suite, size in enumerate(sizes):
        _, priority, _ = rng.choices(CLASSES, weights=[c[2] for c in CLASSES])[0]
        org_id = rng.choice(ORGS)
        submitted_at = rng.uniform(0.0, arrivals_s)
        for _ in range(size):
            duration = min(MEDIAN_TEST_S * rng.lognormvariate(0.0, 0.5), 240.0)
            jobs.append(
                Job(
                    index=len(jobs),
                    suite=suite,
                    org_id=org_id,
                    app_version_id=f"app-{suite:02d}",
                    priority=priority,
                    submitted_at=submitted_at,
                    duration_s=duration,
                )
            )
    return sorted(jobs, key=lambda j: (j.submitted_at, j.index))


#: Picks the next batch for a free slot: (queue, slot's installed app, busy groups, now).
Picker = Callable[[list[Job], str | None, dict[int, int], float], list[Job]]


def pick_fifo(
    queue: list[Job], installed: str | None, busy: dict[int, int], now: float
) -> list[Job]:
    return [queue[0]]


def _summaries(queue: list[Job], busy: dict[int, int], now: float) -> list[QueuedGroup]:
    by_suite: dict[int, list[Job]] = defaultdict(list)
    for job in queue:
        by_suite[job.suite].append(job)
    groups = []
    for suite, jobs in by_suite.items():
        oldest: dict[int, float] = {}
        for job in jobs:
            oldest[job.priority] = max(oldest.get(job.priority, 0.0), now - job.submitted_at)
        groups.append(
            QueuedGroup(
                group_id=suite,
                org_id=jobs[0].org_id,
                app_version_id=jobs[0].app_version_id,
                queued=len(jobs),
                waits=tuple(sorted(oldest.items())),
                active_slots=busy.get(suite, 0),
            )
        )
    return groups


def _group_jobs(queue: list[Job], suite: int, now: float) -> list[Job]:
    # Mirrors claim.sql's order: effective priority, then submission order.
    jobs = [job for job in queue if job.suite == suite]
    return sorted(
        jobs,
        key=lambda j: (-effective_priority(j.priority, now - j.submitted_at, POLICY), j.index),
    )


def pick_qgjob(
    queue: list[Job], installed: str | None, busy: dict[int, int], now: float
) -> list[Job]:
    apps = {installed} if installed else set()
    best = rank_groups(_summaries(queue, busy, now), installed=apps, policy=POLICY)[0]
    size = batch_size(best, target_slots=SLOTS, installed=apps, policy=POLICY)
    return _group_jobs(queue, int(str(best.group_id)), now)[:size]


def pick_strict(
    queue: list[Job], installed: str | None, busy: dict[int, int], now: float
) -> list[Job]:
    apps = {installed} if installed else set()
    best = rank_groups(_summaries(queue, busy, now), installed=apps, policy=POLICY)[0]
    return _group_jobs(queue, int(str(best.group_id)), now)


def simulate(jobs: Sequence[Job], pick: Picker) -> Run:
    run = Run()
    arrivals = list(jobs)
    queue: list[Job] = []
    installed: list[str | None] = [None] * SLOTS
    busy: dict[int, int] = defaultdict(int)
    #: (time a slot is free, slot, suite it was running or -1)
    free: list[tuple[float, int, int]] = [(0.0, slot, -1) for slot in range(SLOTS)]
    heapq.heapify(free)
    while free:
        now, slot, finished_suite = heapq.heappop(free)
        if finished_suite >= 0:
            busy[finished_suite] -= 1
        while arrivals and arrivals[0].submitted_at <= now:
            queue.append(arrivals.pop(0))
        if not queue:
            if arrivals:
                heapq.heappush(free, (arrivals[0].submitted_at, slot, -1))
            continue
        batch = pick(queue, installed[slot], busy, now)
        taken = {job.index for job in batch}
        queue = [job for job in queue if job.index not in taken]
        clock = now
        if installed[slot] != batch[0].app_version_id:
            installed[slot] = batch[0].app_version_id
            run.installs += 1
            clock += INSTALL_S
        for job in batch:
            run.waits[job.priority].append(clock - job.submitted_at)
            clock += job.duration_s
        run.makespan_s = max(run.makespan_s, clock)
        busy[batch[0].suite] += 1
        heapq.heappush(free, (clock, slot, batch[0].suite))
    return run


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def report(title: str, jobs: Sequence[Job]) -> dict[str, float]:
    """Run *jobs* under each policy, print the figures; return qgjob's and FIFO's ratios."""
    pairs = len({job.app_version_id for job in jobs})
    total_work = sum(job.duration_s for job in jobs) + pairs * INSTALL_S
    makespan_bound = max(
        total_work / SLOTS, max(job.submitted_at + job.duration_s for job in jobs)
    )
    print(f"{title}: installs >= {pairs}, makespan >= {makespan_bound:,.0f} s")
    runs = {
        "qgjob": simulate(jobs, pick_qgjob),
        "fifo": simulate(jobs, pick_fifo),
        "strict": simulate(jobs, pick_strict),
    }
    for name, run in runs.items():
        classes = ", ".join(
            f"{label} {p95(run.waits[priority]):,.0f} s"
            for label, priority, _ in CLASSES
            if run.waits[priority]
        )
        worst = max(max(waits) for waits in run.waits.values())
        print(
            f"{name:>8}: installs {run.installs} ({run.installs / pairs:.2f}x bound), "
            f"makespan {run.makespan_s:,.0f} s ({run.makespan_s / makespan_bound:.3f}x bound), "
            f"p95 wait {classes}, max wait {worst:,.0f} s"
        )
    qgjob, fifo = runs["qgjob"], runs["fifo"]
    (_, low, _), _, (_, high, _) = CLASSES
    return {
        "installs_ratio": qgjob.installs / pairs,
        "makespan_ratio": qgjob.makespan_s / makespan_bound,
        "high_low_p95_ratio": p95(qgjob.waits[high]) / p95(qgjob.waits[low]),
        "fifo_installs_ratio": fifo.installs / pairs,
        "fifo_makespan_ratio": fifo.makespan_s / makespan_bound,
    }


def main() -> None:
    print(
        f"workload: {JOBS} jobs in {SUITES} suites, {len(ORGS)} orgs, {SLOTS} slots, "
        f"install {INSTALL_S:g} s, tests median {MEDIAN_TEST_S:g} s (seed {SEED})"
    )
    at_once = report("queued at once", workload())
    arriving = report(f"arriving over {ARRIVALS_S:,.0f} s", workload(arrivals_s=ARRIVALS_S))
    figures = {
        **{f"at_once_{name}": at_once[name] for name in ("installs_ratio", "makespan_ratio")},
        **arriving,
    }
    print("RESULT " + " ".join(f"{name}={value:.3f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
