"""The read side: the projector, the projection tables it keeps, grouping and rebuilds.

Only the projector writes the projection tables (jobs, groups, devices, queue_depth);
the API, the runner and auditors read them. See DESIGN.md, "Projections".
"""

from projections.grouping import DEFAULT_STRATEGY, Grouping, UnknownStrategy, group_id, resolve
from projections.projector import Projector
from projections.rebuild import RebuildRunning, rebuild

__all__ = [
    "DEFAULT_STRATEGY",
    "Grouping",
    "Projector",
    "RebuildRunning",
    "UnknownStrategy",
    "group_id",
    "rebuild",
    "resolve",
]
