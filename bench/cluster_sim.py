"""Simulated machines on a real etcd: the real Agent (with a FakeUnitManager) per machine, plus engines.

Every machine is the production agent code: its own lease kept alive, its own watches on ``schedule/<id>/``
and ``globals/``, its own reconcile and state publishing. Machines share a few EtcdKV clients (one gRPC
channel, one Watch stream and one KeepAlive stream per client), so etcd sees the real request mix.

    async with SimCluster(etcd.endpoint, ttl=10.0) as cluster:
        await cluster.add_machines(1000)
        ...

``active[unit][machine]`` is the monotonic time a unit first became active on a machine (StartUnit on the
fake systemd), and ``changed`` is set after every such start, so benchmarks wait on events, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from fleetd.agent.agent import Agent
from fleetd.engine.engine import Engine
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.systemd.fake import FakeUnitManager
from fleetd.unitfile.unit import UnitFile

__all__ = ["PREFIX", "SimCluster", "SimMachine", "TimedUnitManager", "unit", "wait_until"]

PREFIX = "/_coreos.com/fleet/"
WAVE = 250  # machines started concurrently


def unit(name: str, *, is_global: bool = False, extra: str = "") -> tuple[UnitRecord, str]:
    """A submitted unit (target ``launched``) and its canonical body."""
    fleet = "\n[X-Fleet]\nGlobal=true\n" if is_global else ""
    text = f"[Unit]\nDescription={name}\n\n[Service]\nExecStart=/bin/sleep infinity\n{extra}{fleet}"
    uf = UnitFile.from_text(text)
    return UnitRecord(UnitName(name), uf.hash, is_global, TargetState.LAUNCHED), uf.canonical


def machine_id(label: str) -> MachineID:
    return MachineID(hashlib.md5(label.encode()).hexdigest())


async def wait_until(check: Callable[[], bool], event: asyncio.Event, limit: float) -> bool:
    """Wait until ``check()`` holds, re-checking whenever ``event`` is set; False after ``limit`` seconds."""
    try:
        async with asyncio.timeout(limit):
            while not check():
                event.clear()
                await event.wait()
    except TimeoutError:
        return check()
    return True


class TimedUnitManager(FakeUnitManager):
    """A FakeUnitManager that tells its cluster when a unit becomes active."""

    def __init__(self, on_active: Callable[[UnitName], None]) -> None:
        super().__init__()
        self._on_active = on_active

    async def start(self, name: UnitName) -> None:
        await super().start(name)
        self._on_active(name)


@dataclass(eq=False)
class SimMachine:
    agent: Agent
    units: TimedUnitManager
    task: asyncio.Task[None]

    @property
    def id(self) -> MachineID:
        return self.agent.machine.id


class SimCluster:
    def __init__(
        self,
        endpoint: str,
        *,
        ttl: float = 10.0,
        clients: int = 8,
        engines: int = 1,
        engine_interval: float = 2.0,
        prefix: str = PREFIX,
        request_timeout: float = 30.0,
        quiet: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.ttl = ttl
        self.prefix = prefix
        self._clients = clients
        self._engine_count = engines
        self._engine_interval = engine_interval
        self._timeout = request_timeout
        self.kvs: list[EtcdKV] = []
        self._engine_kvs: list[EtcdKV] = []
        self.machines: list[SimMachine] = []
        self.engines: list[Engine] = []
        self._engine_tasks: list[asyncio.Task[None]] = []
        self.active: dict[UnitName, dict[MachineID, float]] = {}
        self.starts = 0  # (unit, machine) pairs that became active, in total
        self.changed = asyncio.Event()
        # Called with (unit, machine, monotonic time) on a unit's first start on a machine (worker processes
        # forward these to their coordinator).
        self.listener: Callable[[UnitName, MachineID, float], None] | None = None
        self._saved_level: int | None = None
        if quiet:  # thousands of agents log every task at INFO; keep errors only (until close)
            fleetd_logger = logging.getLogger("fleetd")
            self._saved_level = fleetd_logger.level
            fleetd_logger.setLevel(logging.ERROR)

    @property
    def registry(self) -> Registry:
        return Registry(self.kvs[0], self.prefix)

    async def __aenter__(self) -> SimCluster:
        self.kvs = [EtcdKV([self.endpoint], request_timeout=self._timeout) for _ in range(self._clients)]
        await self.registry.ensure_schema()
        for index in range(self._engine_count):
            # Each engine has a client of its own, as in fleetd (where it shares one with a single agent):
            # its backlogged prefix watches on a stream shared with hundreds of simulated agents delayed
            # those agents' watch creation by seconds.
            kv = EtcdKV([self.endpoint], request_timeout=self._timeout)
            self._engine_kvs.append(kv)
            engine = Engine(
                kv, f"engine-{index}", prefix=self.prefix, interval=self._engine_interval, ttl=self.ttl,
                grace=self.ttl,
            )
            self.engines.append(engine)
            self._engine_tasks.append(asyncio.create_task(engine.run()))
        if self.engines and not await self.wait_for_leader(3 * self.ttl):
            raise RuntimeError("no engine became leader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def leader(self) -> Engine | None:
        return next((e for e in self.engines if e.is_leader), None)

    async def wait_for_leader(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while self.leader() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _activated(self, machine: MachineID, name: UnitName) -> None:
        seen = self.active.setdefault(name, {})
        if machine not in seen:
            seen[machine] = at = time.monotonic()
            self.starts += 1
            if self.listener is not None:
                self.listener(name, machine, at)
        self.changed.set()

    async def add_machines(
        self,
        count: int,
        *,
        label: str = "m",
        metadata: Mapping[str, str] | None = None,
        first: int | None = None,
    ) -> list[SimMachine]:
        """Start ``count`` agents (in waves) and return once each is registered with its mirror listed.

        Machine ``i`` (from ``first``, by default the number of machines so far) has an id derived from the
        prefix, ``label`` and ``i``, so worker processes given disjoint ranges simulate distinct machines.
        """
        added: list[SimMachine] = []
        start = len(self.machines) if first is None else first
        for wave in range(start, start + count, WAVE):
            batch: list[SimMachine] = []
            for index in range(wave, min(wave + WAVE, start + count)):
                mid = machine_id(f"{self.prefix}{label}-{index}")
                units = TimedUnitManager(partial(self._activated, mid))
                state = MachineState(
                    mid, public_ip=f"127.1.{index // 250}.{index % 250 + 1}", metadata=dict(metadata or {})
                )
                agent = Agent(
                    Registry(self.kvs[index % len(self.kvs)], self.prefix), units, state, ttl=self.ttl
                )
                batch.append(SimMachine(agent, units, asyncio.create_task(agent.run())))
            await self._until_up(batch)
            added += batch
            self.machines += batch
        # Thousands of agents are millions of long-lived objects: without this, full collections stall the
        # one process that simulates every machine for seconds at a time (a real fleetd holds one agent).
        gc.collect()
        gc.freeze()
        return added

    def cpu_seconds(self) -> float:
        """CPU seconds used by the simulator so far (this process)."""
        return time.process_time()

    async def _until_up(self, batch: Iterable[SimMachine], limit: float = 120.0) -> None:
        pending = list(batch)
        deadline = time.monotonic() + limit
        while pending:
            for m in pending:
                if m.task.done():
                    m.task.result()  # raises the agent's failure
            pending = [m for m in pending if not (m.agent.registered and m.agent.mirror.ready.is_set())]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} simulated machines did not come up in {limit:.0f}s")
            await asyncio.sleep(0.05)

    async def kill(self, machine: SimMachine) -> None:
        """kill -9: the agent stops (no keep-alive, no clean-up); its lease expires after the TTL."""
        machine.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await machine.task
        self.machines.remove(machine)

    def running(self, name: str) -> list[SimMachine]:
        """Machines on which ``name`` is active right now (the fake systemd's view)."""
        return [m for m in self.machines if m.units._state(UnitName(name)).active_state == "active"]

    async def close(self) -> None:
        tasks = [m.task for m in self.machines] + self._engine_tasks
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for kv in [*self.kvs, *self._engine_kvs]:
            with contextlib.suppress(Exception):
                await kv.close()
        self.machines.clear()
        if self._saved_level is not None:
            logging.getLogger("fleetd").setLevel(self._saved_level)
            self._saved_level = None
