"""Why a queued job waits: the one thing holding it, in words and as data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = ["WAIT_REASONS", "wait_reason"]

#: What may hold a queued job, first cause first.
WAIT_REASONS = ("retry_backoff", "no_device", "org_limit", "devices_busy", "next")


def wait_reason(row: Mapping[str, Any]) -> dict[str, Any]:
    """What holds the job, from a ``job_waits`` row: a ``reason`` of WAIT_REASONS (``next``:
    a slot is free, the next claim takes it), a ``message`` and the figures behind it."""
    target, ahead = row["target"], row["jobs_ahead"] or 0
    if row["backing_off"]:
        until: dt.datetime = row["not_before"]
        return {
            "reason": "retry_backoff",
            "until": until.isoformat(),
            "message": f"its retry waits out a backoff until {until.isoformat()}",
        }
    if row["unschedulable"] is not None:
        return {"reason": "no_device", "message": row["unschedulable"]}
    limit, used = row["org_max_slots"], row["org_slots_used"]
    if limit is not None and used >= limit:
        return {
            "reason": "org_limit",
            "org_max_slots": limit,
            "org_slots_used": used,
            "message": f"its organisation uses {used} of its {limit} slots",
        }
    if row["busy_slots"] >= row["slots"]:
        return {
            "reason": "devices_busy",
            "slots": row["slots"],
            "jobs_ahead": ahead,
            "message": f"all {row['slots']} {target} slots are busy; {ahead} jobs ahead of it",
        }
    return {
        "reason": "next",
        "jobs_ahead": ahead,
        "message": f"a {target} slot is free; {ahead} jobs ahead of it",
    }
