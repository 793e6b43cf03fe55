"""The statements that write a folded batch's rows: a few multi-row statements per table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, LiteralString

import attrs

from ledger.codec import json_text
from ledger.sqlfile import load_queries
from projections.deltas import GROUP_COUNTERS
from projections.fold import Fold
from projections.rows import DEVICE_COLUMNS, JOB_COLUMNS

__all__ = ["write_statements"]

_QUERIES = load_queries(Path(__file__).with_name("writing.sql"))
_UPDATED_JOB_COLUMNS = (
    "job_id",
    "version",
    "status",
    "group_id",
    "device_id",
    "agent_id",
    "attempts",
    "flaky",
    "failure_kind",
    "last_error",
    "output",
    "tests",
    "not_before",
    "grouped_at",
    "assigned_at",
    "started_at",
    "finished_at",
    "duration_s",
    "updated_at",
)


def write_statements(fold: Fold) -> list[tuple[LiteralString, dict[str, Any]]]:
    """The statements that write *fold*'s rows, with the rows serialised now."""
    statements: list[tuple[LiteralString, dict[str, Any]]] = []
    new_jobs = [fold.jobs[job_id] for job_id in fold.new_jobs]
    if new_jobs:
        statements.append((_QUERIES["insert_jobs"], _rows(new_jobs, JOB_COLUMNS)))
    changed = [fold.jobs[job_id] for job_id in fold.changed_jobs - fold.new_jobs]
    if changed:
        statements.append((_QUERIES["update_jobs"], _rows(changed, _UPDATED_JOB_COLUMNS)))
    if fold.changed_devices:
        devices = [fold.devices[device_id] for device_id in fold.changed_devices]
        statements.append((_QUERIES["upsert_devices"], _rows(devices, DEVICE_COLUMNS)))
    new_groups = [
        {"group_id": group_id, **attrs.asdict(change.new)}
        for group_id, change in fold.groups.items()
        if change.new is not None
    ]
    if new_groups:
        statements.append((_QUERIES["create_groups"], {"rows": json_text(new_groups)}))
    if fold.groups:
        changes = [
            {
                "group_id": group_id,
                **{name: change.counts[name] for name in GROUP_COUNTERS},
                "installs": change.installs,
                "attempts": change.attempts,
                "updated_at": change.updated_at,
            }
            for group_id, change in fold.groups.items()
        ]
        statements.append((_QUERIES["add_to_groups"], {"rows": json_text(changes)}))
    depths = [
        {"org_id": org_id, "target": target, "status": status, "depth": delta}
        for (org_id, target, status), delta in fold.queue.items()
        if delta
    ]
    if depths:
        statements.append((_QUERIES["add_to_queue_depth"], {"rows": json_text(depths)}))
        statements.append((_QUERIES["drop_empty_queue_depth"], {}))
    return statements


def _rows(rows: Sequence[object], columns: Sequence[str]) -> dict[str, str]:
    """The ``rows`` parameter of the write statements: *rows* as a JSON array of objects."""
    rows_json = json_text([{column: getattr(row, column) for column in columns} for row in rows])
    return {"rows": rows_json}
