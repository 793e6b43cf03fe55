"""The device timeline's bars, from the ledger's device activity (ledger/timeline.py).

A slot's lane has a bar for each install, from the claim of the batch it served to the
AppInstalled, and one for each attempt that started, from its JobStarted to the event
that ended it (open while it runs). A group installs once, and its tests follow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from uuid import UUID

from http_api.views import Json
from ledger.timeline import Activity

__all__ = ["bars", "utilisation"]

_ENDS = {
    "JobPassed": "passed",
    "JobLeaseExpired": "lease_expired",
    "JobCancelled": "cancelled",
    "JobTimedOut": "timed_out",
}


def _outcome(activity: Activity) -> str:
    match activity.type:
        case "JobFailed":
            return "error" if activity.kind == "infrastructure" else "failed"
        case "JobRetryScheduled":
            return "handed_back" if activity.handed_back else "retried"
    return _ENDS[activity.type]


def bars(activity: Iterable[Activity]) -> list[Json]:
    """The bars of *activity* (oldest first), in the order they began."""
    drawn: list[Json] = []
    slot_of: dict[tuple[UUID, int | None], UUID] = {}
    last_attempt: dict[UUID, int | None] = {}
    open_bars: dict[tuple[UUID, int | None], Json] = {}
    lane_moved: dict[UUID, dt.datetime] = {}
    for event in activity:
        at = event.recorded_at
        if event.type == "AppInstalled":
            assert event.device_id is not None
            drawn.append(
                {
                    "kind": "install",
                    "device_id": str(event.device_id),
                    "start": lane_moved.get(event.device_id, at).isoformat(),
                    "end": at.isoformat(),
                    "outcome": "install",
                    "app_version_id": event.app_version_id,
                    "group_id": None if event.group_id is None else str(event.group_id),
                }
            )
            lane_moved[event.device_id] = at
            continue
        attempt = event.attempt if event.attempt is not None else last_attempt.get(event.stream_id)
        key = (event.stream_id, attempt)
        if event.type == "JobAssigned":
            assert event.device_id is not None
            slot_of[key] = event.device_id
            last_attempt[event.stream_id] = attempt
            lane_moved[event.device_id] = at
        elif event.type == "JobStarted" and key in slot_of:
            bar: Json = {
                "kind": "attempt",
                "device_id": str(slot_of[key]),
                "start": at.isoformat(),
                "end": None,
                "outcome": "running",
                "job_id": str(event.stream_id),
                "attempt": attempt,
                "retried": False,
            }
            open_bars[key] = bar
            drawn.append(bar)
        elif key in open_bars:
            ended = open_bars[key]
            if ended["end"] is None:
                ended.update(end=at.isoformat(), outcome=_outcome(event))
            elif event.type == "JobRetryScheduled":
                ended["retried"] = True
            if key in slot_of:
                lane_moved[slot_of[key]] = at
    return drawn


def utilisation(drawn: Sequence[Json], since: dt.datetime, until: dt.datetime) -> dict[str, float]:
    """Each lane's share of [since, until) covered by its bars (open ones run to *until*)."""
    span = (until - since).total_seconds()
    busy: dict[str, float] = {}
    for bar in drawn:
        start = max(dt.datetime.fromisoformat(bar["start"]), since)
        end = min(dt.datetime.fromisoformat(bar["end"]) if bar["end"] else until, until)
        seconds = max((end - start).total_seconds(), 0.0)
        busy[bar["device_id"]] = busy.get(bar["device_id"], 0.0) + seconds
    return {device: min(seconds / span, 1.0) for device, seconds in busy.items()} if span else {}
