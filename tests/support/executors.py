"""A reporter that records what an executor reports, for executor tests."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import attrs

from runner.executors import Outcome


@attrs.define
class RecordingReporter:
    """Keeps every started/finished call, in order."""

    events: list[tuple[str, Any]] = attrs.field(factory=list)

    async def started(self, job_id: UUID) -> None:
        self.events.append(("started", job_id))

    async def finished(self, outcome: Outcome) -> None:
        self.events.append(("finished", outcome))

    @property
    def started_ids(self) -> list[UUID]:
        return [value for kind, value in self.events if kind == "started"]

    @property
    def outcomes_in_order(self) -> list[Outcome]:
        return [value for kind, value in self.events if kind == "finished"]

    @property
    def outcomes(self) -> dict[UUID, Outcome]:
        by_job = {outcome.job_id: outcome for outcome in self.outcomes_in_order}
        assert len(by_job) == len(self.outcomes_in_order), "a job was finished twice"
        return by_job
