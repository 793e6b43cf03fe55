"""Standing claims: an idle slot's claim on the next job for its target.

A slot that finds nothing to claim does not only wait: it leaves a standing claim in
the database (``stand``). The submit of a single job for that target then fulfils it in
its own transaction, appending the job's JobAssigned for the slot
(migrations/035_standing_claims.sql), and its notification says which slot got the job.
Without it, a job submitted to an idle runner waits for the slot to hear of it, choose
it and claim it in a round trip of its own; with it, the slot hears of a batch that is
already its own, and starts it.

The ranking of DESIGN.md holds: a standing slot had nothing better to claim, and of
the slots standing for a target, the submit prefers one with the job's app installed,
then the one idle longest. Orgs with a parallel limit, suites and jobs the API could not
group go the way of every other job, claimed by the slots themselves, which count
their limits and size their batches.

Every claim a slot makes withdraws its standing claim first (begin_claim). A claim that
finds the slot holding a batch it does not know of (BatchGiven) lost that race to a
submit: the slot runs the batch if the agent heard which it is, or else hands it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from ledger.announcement import GroupedJob
from runner._sql import QUERIES
from runner.choose import grouped_held
from runner.claim import Claim, SlotIdentity, check_opened
from runner.queue_view import UnitKey

__all__ = ["given_claim", "stand"]


async def stand(
    conn: psycopg.AsyncConnection[Any],
    slot: SlotIdentity,
    *,
    last_batch: Sequence[UUID],
    installed: str | None,
) -> None:
    """End the slot's last batch and leave its standing claim.

    Raises LeaseLost when the agent's lease lapsed, BatchGiven when the slot holds a
    batch it does not know of.
    """
    cursor = await conn.execute(
        QUERIES["stand"],
        {
            "device_id": slot.device_id,
            "agent_id": slot.agent_id,
            "target": slot.target,
            "last_batch": list(last_batch),
            "installed": installed,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    check_opened(row[0])


def given_claim(
    jobs: Sequence[GroupedJob], slot: SlotIdentity, default_timeout_s: float
) -> tuple[Claim, UnitKey]:
    """The batch a submit gave *slot*, as the slot's own claim would have left it."""
    held = [grouped_held(job, slot, default_timeout_s) for job in jobs]
    for job in held:
        job.version += 1  # past the JobAssigned the submit appended
    first = jobs[0]
    claim = Claim(
        group_id=first.group_id,
        app_version_id=first.submitted.app_version_id,
        org_id=first.submitted.org_id,
        jobs=tuple(held),
    )
    return claim, (claim.group_id, claim.app_version_id)
