"""The read side: the projector, the projection tables it keeps, and rebuilds.

Only the projector writes the projection tables (jobs, groups, devices, queue_depth);
the API and auditors read them. docs/design.md says why they are eventually consistent
and what is not (the claimable queue, ledger/ keeps it in step with the events).
"""

from projections.projector import Projector
from projections.rebuild import RebuildRunning, rebuild

__all__ = ["Projector", "RebuildRunning", "rebuild"]
