"""The agent: one process hosting device slots, with its lease and its watchers.

Besides the slots, an agent runs: the EventWriter (results, batched), a listener that
wakes an idle slot when work may wait for its target, a poll timer that does the same
in case a notification was lost, a heartbeat that renews its lease, a watcher that
stops batches whose jobs were cancelled, and maintenance shared by all agents (rescue
lapsed agents' jobs, time out overdue queued jobs, wake agents for retries that fell
due), which one agent of the fleet does per interval, in turn.

Each process takes a fresh agent id (``name:random``), so a restarted agent never
mistakes its previous life's lease for its own; it declares earlier processes of its
name dead and rescues their jobs right away. A process whose lease lapsed takes a
fresh id the same way and carries on: whatever it still held was handed on, and its
late results for it lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.blobs import PostgresBlobStore
from ledger.errors import QgjobError
from ledger.wakeup import Channel, Listener, Notifier
from runner._sql import QUERIES
from runner.blob_cache import BlobCache
from runner.claim import LeaseLost
from runner.config import AgentConfig, make_executor
from runner.devices import DeviceStream, device_id_for, register_devices
from runner.jobs import runner_actor
from runner.rescue import rescue_lapsed_agents
from runner.services import SlotServices
from runner.slot import Slot
from runner.timeouts import time_out_queued_jobs
from runner.uploads import Uploads
from runner.wakeups import WakeUps
from runner.writer import EventWriter

__all__ = ["Agent", "run_agent"]

_log = logging.getLogger(__name__)
#: How long the agent gathers what it appends before it notifies the projector.
_NOTIFY_AFTER_S = 0.05
_RECONNECT_DELAY_S = 1.0


async def run_agent(url: str, config: AgentConfig, stop: asyncio.Event) -> None:
    """Run an agent until *stop* is set, then drain it and return.

    Raises LeaseLost if a newer process of the agent's name took over.
    """
    await Agent(url, config).run(stop)


class Agent:
    def __init__(self, url: str, config: AgentConfig) -> None:
        self.url = url
        self.config = config
        self.agent_id = self._new_id()
        self.slots: list[Slot] = []
        self._targets = frozenset(spec.target for spec in config.slots)
        self._lease_lost = asyncio.Event()
        self._wakeups = WakeUps((spec.target, spec.kind) for spec in config.slots)
        self._rng = random.Random()

    @property
    def actor(self) -> str:
        return runner_actor(self.agent_id)

    def _new_id(self) -> str:
        return f"{self.config.name}:{uuid.uuid4().hex[:8]}"

    async def run(self, stop: asyncio.Event) -> None:
        """Serve under a lease until *stop*. A lease that lapsed (the agent was cut off
        from the database, or starved of CPU) ends one life: its work is handed back or
        already handed on, and the agent registers again under a new id. A newer process
        of its name ends it for good (LeaseLost)."""
        while True:
            try:
                await self._live(stop)
                return
            except LeaseLost:
                if stop.is_set() or await self._superseded():
                    raise
            except psycopg.OperationalError as error:
                if stop.is_set():
                    return
                _log.warning("agent %s cannot reach the database (%s)", self.agent_id, error)
                await asyncio.sleep(_RECONNECT_DELAY_S)
            previous, self.agent_id = self.agent_id, self._new_id()
            self._lease_lost.clear()
            _log.warning(
                "agent %s lost its lease; registering again as %s", previous, self.agent_id
            )

    async def _superseded(self) -> bool:
        """Whether another live process of this agent's name holds a lease."""
        params = {"agent_id": self.agent_id, "name": self.config.name}
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            row = await (await conn.execute(QUERIES["other_live_lease"], params)).fetchone()
        return bool(row and row[0])

    async def _live(self, stop: asyncio.Event) -> None:
        """One life: a lease, the slots registered under it, until *stop* or its loss."""
        config = self.config
        executor = make_executor(config)
        async with contextlib.AsyncExitStack() as stack:
            # What it appends concerns the projector alone, which takes its time to batch
            # anyway (projections/projector.py): a job's start and result, a moment apart,
            # go out as one notification.
            notifier = await stack.enter_async_context(Notifier(self.url, delay=_NOTIFY_AFTER_S))
            await stack.enter_async_context(
                Listener(self.url, channels=(Channel.QUEUE,), on_notification=self._notified)
            )
            writer = EventWriter(
                self.url, actor=self.actor, notifier=notifier, on_lost=self._jobs_lost
            )
            # The lease lives on this connection, and with it the agent's life lock: when
            # it closes, other agents know this one is gone (runner/rescue.py).
            lease = await stack.enter_async_context(
                await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            )
            devices = await self._start(lease)
            # Blobs stream from their own connections: a slot's connection stays free for
            # its claims and events while a build arrives. None are opened until needed.
            blob_pool = await stack.enter_async_context(
                AsyncConnectionPool(
                    self.url,
                    min_size=0,
                    max_size=len(devices),
                    kwargs={"autocommit": True},
                    open=False,
                )
            )
            services = SlotServices(
                url=self.url,
                agent_id=self.agent_id,
                config=config,
                executor=executor,
                writer=writer,
                wakeups=self._wakeups,
                rng=self._rng,
                blobs=BlobCache(PostgresBlobStore(blob_pool), config.cache_dir),
                uploads=Uploads(),
                lease_lost=self._lease_lost,
            )
            self.slots = [Slot(services, device) for device in devices]
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(writer.run()),
                    group.create_task(self._hold_lease(lease)),
                    group.create_task(
                        self._every(config.maintenance_interval_s, self._maintain_in_turn)
                    ),
                    group.create_task(self._every(config.cancel_poll_s, self._check_cancels)),
                    group.create_task(self._poll()),
                ]
                slot_tasks = [group.create_task(slot.run()) for slot in self.slots]
                stopped = group.create_task(stop.wait())
                lost = group.create_task(self._lease_lost.wait())
                await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
                reason = "the agent lost its lease" if lost.done() else "the agent is shutting down"
                for slot in self.slots:
                    slot.stop(reason, at_once=lost.done())
                self._wakeups.wake_all()
                await asyncio.gather(*slot_tasks)
                for task in [*background, stopped, lost]:
                    task.cancel()
            if self._lease_lost.is_set():
                raise LeaseLost()
            await self._release_lease()
            _log.info("agent %s stopped", self.agent_id)

    async def _release_lease(self) -> None:
        """Give the lease up, so that no rescuer waits for it to lapse."""
        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(QUERIES["release_lease"], {"agent_id": self.agent_id})
        except psycopg.OperationalError as error:
            _log.warning("could not release the lease (%s); it will lapse by itself", error)

    async def _start(self, conn: psycopg.AsyncConnection[Any]) -> list[DeviceStream]:
        """Take a lease, supersede older processes of this name, register the slots."""
        config = self.config
        ids = {"agent_id": self.agent_id, "name": config.name}
        await conn.execute(QUERIES["hold_life"], {"agent_id": self.agent_id})
        await conn.execute(
            QUERIES["acquire_lease"],
            {**ids, "host": socket.gethostname(), "pid": os.getpid(), "ttl_s": config.lease_ttl_s},
        )
        await conn.execute(QUERIES["supersede_agents"], ids)
        for org_id, max_slots in config.org_limits.items():
            await conn.execute(QUERIES["set_org_limit"], {"org_id": org_id, "max_slots": max_slots})
        devices = [
            DeviceStream(device_id_for(config.name, spec.name), spec, agent_id=self.agent_id)
            for spec in config.slots
        ]
        await register_devices(conn, devices)
        for device in devices:
            spec = device.spec
            await conn.execute(
                QUERIES["register_slot"],
                {
                    "device_id": device.device_id,
                    "agent_id": self.agent_id,
                    "target": spec.target,
                    "platform": spec.platform,
                    "device": spec.device,
                    "os_version": spec.os_version,
                },
            )
        await self._maintain(conn)
        _log.info(
            "agent %s up with %d slot(s): %s; executor %s",
            self.agent_id,
            len(devices),
            ", ".join(f"{d.spec.name} ({d.spec.describe()})" for d in devices),
            "simulated (no real devices)" if config.executor == "simulated" else config.executor,
        )
        return devices

    async def _every(
        self,
        interval: float,
        work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
    ) -> None:
        """Run *work* every *interval* seconds on a connection of its own, reconnecting."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    while True:
                        try:
                            await work(conn)
                        except psycopg.OperationalError:
                            raise
                        except (psycopg.Error, QgjobError) as error:
                            # A row this cannot deal with must not stop the agent's slots.
                            _log.error("%s failed (%s); trying again", work.__name__, error)
                        await asyncio.sleep(interval)
            except psycopg.OperationalError as error:
                _log.warning("%s: connection lost (%s)", work.__name__, error)
                await asyncio.sleep(interval)

    async def _poll(self) -> None:
        """Wake an idle slot of each target now and then: a lost notification costs a
        poll, never a job. Jittered, so that a fleet's agents do not poll in step."""
        while True:
            await asyncio.sleep(self.config.poll_interval_s * self._rng.uniform(0.5, 1.5))
            for target in self._targets:
                self._wakeups.wake_target(target)

    async def _hold_lease(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Renew the lease every third of its time until it is lost: lapsed, or its
        connection gone (and with it the life lock, so others may count this agent dead)."""
        params = {"agent_id": self.agent_id, "ttl_s": self.config.lease_ttl_s}
        while True:
            await asyncio.sleep(self.config.lease_ttl_s / 3)
            try:
                renewed = await (await conn.execute(QUERIES["renew_lease"], params)).fetchone()
            except psycopg.OperationalError as error:
                _log.error("agent %s: the lease's connection is gone (%s)", self.agent_id, error)
                renewed = None
            if renewed is None:
                _log.error("agent %s: lease lost; handing back its work", self.agent_id)
                self._lease_lost.set()
                return

    async def _maintain_in_turn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The fleet's maintenance, if this agent's turn came: one agent per interval
        does it (migrations/110_fleet_maintenance_turns.sql)."""
        params = {"interval_s": self.config.maintenance_interval_s}
        turn = await (await conn.execute(QUERIES["take_maintenance_turn"], params)).fetchone()
        if turn is None:
            return
        await self._maintain(conn)
        await conn.execute(QUERIES["notify_due_retries"], {"since": turn[0]})

    async def _maintain(self, conn: psycopg.AsyncConnection[Any]) -> None:
        rescued = await rescue_lapsed_agents(
            conn, rescuer=self.agent_id, retry=self.config.retry, rng=self._rng
        )
        timed_out = await time_out_queued_jobs(conn, actor=self.actor)
        if rescued or timed_out:
            _log.info("rescued %d job(s); timed out %d queued job(s)", rescued, timed_out)

    async def _check_cancels(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Stop the batches of jobs that left this agent's hands (cancelled, rescued)."""
        held = [job.job_id for slot in self.slots for job in slot.held()]
        if not held:
            return
        params = {"ids": held, "agent_id": self.agent_id}
        cursor = await conn.execute(QUERIES["ended_elsewhere"], params)
        ended = [row[0] for row in await cursor.fetchall()]
        if ended:
            self._jobs_lost(ended)

    def _notified(self, _channel: Channel, target: str | None) -> None:
        """Work may wait for *target* (None: the listener reconnected, and may have missed
        notifications for any target)."""
        for woken in self._targets if target is None else self._targets & {target}:
            self._wakeups.wake_target(woken)

    def _jobs_lost(self, job_ids: Sequence[UUID]) -> None:
        for slot in self.slots:
            slot.jobs_ended_elsewhere(job_ids)
