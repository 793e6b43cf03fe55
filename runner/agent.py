"""The agent: one process hosting device slots, with its lease and its watchers.

Besides the slots, an agent runs: the EventWriter (results, batched), a listener that
wakes idle slots when events land, a heartbeat that renews its lease, a watcher that
stops batches whose jobs were cancelled, and maintenance shared by all agents (rescue
lapsed agents' jobs, time out overdue queued jobs).

Each process takes a fresh agent id (``name:random``), so a restarted agent never
mistakes its previous life's lease for its own; it declares earlier processes of its
name dead and rescues their jobs right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg

from ledger.announcement import Assignment, GroupedJob
from ledger.wakeup import Channel, Listener, Notifier
from runner._sql import QUERIES
from runner.claim import LeaseLost
from runner.config import AgentConfig, make_executor
from runner.devices import DeviceStream, device_id_for, register_devices
from runner.fresh import FreshJobs
from runner.queue_view import QueueView
from runner.rescue import rescue_lapsed_agents
from runner.slot import Slot, SlotServices
from runner.timeouts import time_out_queued_jobs
from runner.wake import Wakeup
from runner.writer import EventWriter

__all__ = ["Agent", "run_agent"]

_log = logging.getLogger(__name__)
#: The cancel watcher looks at most this often, however many notifications arrive.
_CANCEL_CHECK_GAP_S = 0.1
#: How long the agent gathers what it appends before it notifies the projector.
_NOTIFY_AFTER_S = 0.05


async def run_agent(url: str, config: AgentConfig, stop: asyncio.Event) -> None:
    """Run an agent until *stop* is set, then drain it and return.

    Raises LeaseLost if the agent lost its lease (its jobs went to other agents).
    """
    await Agent(url, config).run(stop)


class Agent:
    def __init__(self, url: str, config: AgentConfig) -> None:
        self.url = url
        self.config = config
        self.agent_id = f"{config.name}:{uuid.uuid4().hex[:8]}"
        self.actor = f"runner:{self.agent_id}"
        self.slots: list[Slot] = []
        #: The agent's summary of the queue, per target its slots serve.
        self._views: dict[str, QueueView] = {}
        self._lease_lost = asyncio.Event()
        self._fresh = FreshJobs()
        self._wakeup = Wakeup()
        self._rng = random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        executor = make_executor(config)
        async with contextlib.AsyncExitStack() as stack:
            # What it appends concerns the projector alone, which takes its time to batch
            # anyway (projections/projector.py): a job's start and result, a moment apart,
            # go out as one notification.
            notifier = await stack.enter_async_context(Notifier(self.url, delay=_NOTIFY_AFTER_S))
            fresh, wakeup = self._fresh, self._wakeup
            # Its own claims and results concern the projector only: it does not hear them.
            await stack.enter_async_context(
                Listener(
                    self.url,
                    channels=(Channel.JOBS, Channel.QUEUE),
                    on_notification=self._notified,
                )
            )
            writer = EventWriter(
                self.url, actor=self.actor, notifier=notifier, on_lost=self._jobs_lost
            )
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                devices = await self._start(conn)
                await fresh.start(conn)
                self._views = {
                    target: QueueView(target, self.agent_id, ttl_s=config.queue_view_ttl_s)
                    for target in {device.spec.target for device in devices}
                }
                # Read before the first claim, which may take fresh jobs without asking the
                # database anything: it must know which orgs have a parallel limit.
                for view in self._views.values():
                    await view.any_queued(conn)
            services = SlotServices(
                url=self.url,
                agent_id=self.agent_id,
                config=config,
                executor=executor,
                writer=writer,
                wakeup=wakeup,
                rng=self._rng,
                build_refs={},
                uploads=defaultdict(asyncio.Lock),
                views=self._views,
                fresh=fresh,
                running={},
                lease_lost=self._lease_lost,
            )
            self.slots = [Slot(services, device) for device in devices]
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(writer.run()),
                    group.create_task(self._every(config.lease_ttl_s / 3, self._renew)),
                    group.create_task(self._every(config.maintenance_interval_s, self._maintain)),
                    group.create_task(self._watch_cancels(wakeup)),
                ]
                slot_tasks = [group.create_task(slot.run()) for slot in self.slots]
                stopped = group.create_task(stop.wait())
                lost = group.create_task(self._lease_lost.wait())
                await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
                reason = "the agent lost its lease" if lost.done() else "the agent is shutting down"
                for slot in self.slots:
                    slot.stop(reason, at_once=lost.done())
                wakeup.fire()
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
            await conn.execute(
                QUERIES["register_slot"],
                {
                    "device_id": device.device_id,
                    "agent_id": self.agent_id,
                    "target": device.spec.target,
                },
            )
        await self._maintain(conn)
        _log.info(
            "agent %s up with %d slot(s): %s; executor %s",
            self.agent_id,
            len(devices),
            ", ".join(f"{d.spec.name} ({d.spec.target})" for d in devices),
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
                        await work(conn)
                        await asyncio.sleep(interval)
            except psycopg.OperationalError as error:
                _log.warning("%s: connection lost (%s)", work.__name__, error)
                await asyncio.sleep(interval)

    async def _renew(self, conn: psycopg.AsyncConnection[Any]) -> None:
        params = {"agent_id": self.agent_id, "ttl_s": self.config.lease_ttl_s}
        if await (await conn.execute(QUERIES["renew_lease"], params)).fetchone() is None:
            _log.error("agent %s: lease lapsed; stopping its work", self.agent_id)
            self._lease_lost.set()

    async def _maintain(self, conn: psycopg.AsyncConnection[Any]) -> None:
        rescued = await rescue_lapsed_agents(
            conn, actor=self.actor, retry=self.config.retry, rng=self._rng
        )
        timed_out = await time_out_queued_jobs(conn, actor=self.actor)
        if rescued or timed_out:
            _log.info("rescued %d job(s); timed out %d queued job(s)", rescued, timed_out)

    async def _watch_cancels(self, wakeup: Wakeup) -> None:
        """Stop the batches of jobs cancelled while on a slot of this agent."""

        async def check(conn: psycopg.AsyncConnection[Any]) -> None:
            held = [job.job_id for slot in self.slots for job in slot.held()]
            if held:
                cursor = await conn.execute(QUERIES["cancelled_jobs"], {"ids": held})
                cancelled = [row[0] for row in await cursor.fetchall()]
                if cancelled:
                    for slot in self.slots:
                        slot.jobs_ended_elsewhere(cancelled, cancelled=True)
            await wakeup.wait(self.config.cancel_poll_s)

        await self._every(_CANCEL_CHECK_GAP_S, check)

    def _notified(self, channel: Channel, payload: str | None) -> None:
        """Take in a notification (None: the listener reconnected) and wake the slots,
        saying whether it was news beyond jobs announced by their submit (runner/wake.py)."""
        said = self._fresh.heard(channel, payload)
        if said is not None and said.assigned is not None:
            # A job given to a standing claim is no news to anyone but its slot.
            self._give(said.assigned, said.jobs)
            return
        if channel is Channel.QUEUE:
            # Jobs wait in the jobs table: the agent's summaries of it are out of date. (Jobs
            # just submitted need no new summary: they are fresh, runner/fresh.py.)
            for view in self._views.values():
                view.invalidate()
        self._wakeup.fire(news=channel is not Channel.JOBS or self._fresh.look_wanted)

    def _give(self, assigned: Assignment, jobs: list[GroupedJob]) -> None:
        """Hand a batch a submit gave to a standing claim to its slot, if it is ours."""
        if assigned.agent_id == self.agent_id:
            for slot in self.slots:
                if slot.identity.device_id == assigned.device_id:
                    slot.given(jobs)

    def _jobs_lost(self, job_ids: Sequence[UUID]) -> None:
        for slot in self.slots:
            slot.jobs_ended_elsewhere(job_ids, cancelled=False)
