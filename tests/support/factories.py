"""Small builders for events and metadata used across tests."""

from __future__ import annotations

import uuid
from typing import Any

from ledger.events import JobSubmitted, Metadata, Target


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
