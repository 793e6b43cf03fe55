"""Small builders for events and metadata used across tests."""

from __future__ import annotations

import uuid
from typing import Any

from ledger.events import JobGrouped, JobSubmitted, Metadata, Target
from ledger.grouping import DEFAULT_STRATEGY, resolve


def metadata(org_id: str = "qualgent", actor: str = "test") -> Metadata:
    return Metadata(org_id=org_id, actor=actor, correlation_id=uuid.uuid4())


def submitted(**overrides: Any) -> JobSubmitted:
    fields: dict[str, Any] = {
        "org_id": "qualgent",
        "app_version_id": "xyz123",
        "test_path": "tests/onboarding.spec.js",
        "target": Target.DEVICE,
    }
    fields.update(overrides)
    return JobSubmitted(**fields)


def grouped(job: JobSubmitted, strategy: str = DEFAULT_STRATEGY) -> tuple[JobSubmitted, JobGrouped]:
    """*job* and its JobGrouped, as the API appends them together (http_api/submit.py)."""
    return job, resolve(strategy).group(job)


def submitted_and_grouped(**overrides: Any) -> tuple[JobSubmitted, JobGrouped]:
    """A job's first two events as the API appends them: ``submitted(**overrides)``, grouped
    by the default strategy."""
    return grouped(submitted(**overrides))
