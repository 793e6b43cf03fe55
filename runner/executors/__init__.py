"""Executors: what actually runs a batch of tests on a device slot.

``appwright`` runs the real AppWright CLI; ``simulated`` pretends, for machines without
devices. Both follow the Executor protocol in base.py.
"""

from __future__ import annotations

from .appwright import AppWrightExecutor
from .base import (
    Batch,
    BatchJob,
    BatchReporter,
    Executor,
    InfrastructureError,
    Outcome,
    OutcomeStatus,
    SlotSpec,
    Target,
)
from .simulated import SimulatedExecutor

__all__ = [
    "AppWrightExecutor",
    "Batch",
    "BatchJob",
    "BatchReporter",
    "Executor",
    "InfrastructureError",
    "Outcome",
    "OutcomeStatus",
    "SimulatedExecutor",
    "SlotSpec",
    "Target",
]
