"""A slot's device stream: registration, installs and BrowserStack uploads.

Only the agent hosting a slot appends to its device stream, so it keeps the stream's
version itself; should another writer have moved it (an operator retiring the device,
say), the append is retried once at the version read back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from ledger.errors import ConcurrencyConflict
from ledger.events import (
    AppInstalled,
    BuildUploaded,
    DeviceRegistered,
    Event,
    Metadata,
    Target,
)
from ledger.store import StreamWrite, append, append_many, read_stream, stream_version
from runner.executors import SlotSpec

__all__ = ["SYSTEM_ORG", "DeviceStream", "device_id_for", "register_devices"]

#: The org that device registrations are filed under: they belong to no customer.
SYSTEM_ORG = "qgjob"

# Fixed forever: a slot keeps its device id across restarts of its agent.
_NAMESPACE = uuid.UUID("8d4c6f0e-3b1a-4f6e-9a57-2c0d9e4b7a31")


def device_id_for(agent_name: str, slot_name: str) -> UUID:
    return uuid.uuid5(_NAMESPACE, f"{agent_name}/{slot_name}")


class DeviceStream:
    """Appends to one slot's device stream and remembers what is installed on it."""

    def __init__(self, device_id: UUID, spec: SlotSpec, *, agent_id: str) -> None:
        self.device_id = device_id
        self.spec = spec
        self._agent_id = agent_id
        self._version = 0
        #: The app version installed last, which the slot prefers to run again.
        self.installed: str | None = None

    async def _registration(self, conn: psycopg.AsyncConnection[Any]) -> StreamWrite:
        """Recall what the slot has installed; the write that announces it (again)."""
        history = await read_stream(conn, self.device_id)
        self._version = len(history)
        installs = [e.event for e in history if isinstance(e.event, AppInstalled)]
        self.installed = installs[-1].app_version_id if installs else None
        registered = DeviceRegistered(
            name=self.spec.name,
            target=Target(self.spec.target),
            agent_id=self._agent_id,
            capabilities=dict(self.spec.capabilities),
        )
        metadata = Metadata(org_id=SYSTEM_ORG, actor=f"runner:{self._agent_id}")
        return StreamWrite(
            stream_id=self.device_id,
            expected_version=self._version,
            events=[registered],
            metadata=metadata,
        )

    async def installed_app(
        self, conn: psycopg.AsyncConnection[Any], app_version_id: str, group_id: UUID, org_id: str
    ) -> None:
        """Record an install done for a batch of *org_id*'s group."""
        event = AppInstalled(app_version_id=app_version_id, group_id=group_id)
        await self._append(conn, event, org_id)
        self.installed = app_version_id

    async def uploaded_build(
        self, conn: psycopg.AsyncConnection[Any], upload: BuildUploaded, org_id: str
    ) -> None:
        """Record an upload made for *org_id*, which only that org's batches reuse."""
        await self._append(conn, upload, org_id)

    async def _append(self, conn: psycopg.AsyncConnection[Any], event: Event, org_id: str) -> None:
        metadata = Metadata(org_id=org_id, actor=f"runner:{self._agent_id}")
        try:
            await append(conn, self.device_id, self._version, [event], metadata)
        except ConcurrencyConflict:
            self._version = await stream_version(conn, self.device_id)
            await append(conn, self.device_id, self._version, [event], metadata)
        self._version += 1


async def register_devices(
    conn: psycopg.AsyncConnection[Any], devices: Sequence[DeviceStream]
) -> None:
    """Announce every slot of an agent in one append (again, after a restart)."""
    for attempt in range(2):
        writes = [await device._registration(conn) for device in devices]
        try:
            await append_many(conn, writes)
        except ConcurrencyConflict:
            if attempt:
                raise
            continue
        for device in devices:
            device._version += 1
        return
