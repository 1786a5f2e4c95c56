"""Simulated fleetds on a real etcd: per machine the real Agent (with a FakeUnitManager) and, as fleetd runs
by default, an engine candidate.

Every machine is the production agent code (its own lease kept alive, its own watches on ``schedule/<id>/``
and ``globals/``, its own reconcile and state publishing) plus the production engine
(``bench.engines.SimEngine``: its own election lease, a watch on the leader key while standby, the registry
mirror while leading).
Machines share a few EtcdKV clients (one gRPC channel, one Watch stream and one KeepAlive stream per client),
so etcd sees the real request mix: agents share ``clients`` of them, engine candidates ``engine_clients``
others (a leader's mirror listing on a stream shared with hundreds of agents delayed their watch creation by
seconds; a real fleetd has a channel of its own, so neither pool stands for more than a few hundred fleetds'
worth of streams). ``engines=N`` runs N candidates apart from the machines instead (``engines=0``: none), and
``standby_mirrors=True`` makes every candidate a ``MirroringEngine`` (the composition before issue 15).

    async with SimCluster(etcd.endpoint, ttl=10.0) as cluster:
        await cluster.add_machines(1000)
        ...

``active[unit][machine]`` is the monotonic time a unit first became active on a machine (StartUnit on the
fake systemd), and ``changed`` is set after every such start, so benchmarks wait on events, not sleeps. A
benchmark's clock stops at ``listed()``: the state is published in etcd and read back through
``Registry.list_unit_states``, what ``fleetctl list-units`` shows.
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

from bench.engines import MirroringEngine, SimEngine
from fleetd.agent.agent import Agent
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.kv import KV, EventType
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.systemd.fake import FakeUnitManager
from fleetd.unitfile.unit import UnitFile

__all__ = [
    "PREFIX",
    "SimCluster",
    "SimMachine",
    "TimedUnitManager",
    "count_terms",
    "listed",
    "unit",
    "wait_until",
]

PREFIX = "/_coreos.com/fleet/"
WAVE = 250  # machines started concurrently
ENGINE_INTERVAL = 2.0  # fleetd's defaults: engine_reconcile_interval 2 s,
ENGINE_TTL = 10.0  # and an engine lease of 5 intervals (fleetd.server.ENGINE_TTL_FACTOR)


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


async def count_terms(kv: KV, key: str, start: int, terms: list[int]) -> None:
    """Append the create revision of every new leader term (``key`` created again) after revision ``start``;
    run as a task and cancel it."""
    async for batch in kv.watch(key, start):
        terms += [
            e.kv.create_revision for e in batch if e.type is EventType.PUT and e.kv.create_revision > start
        ]


async def listed(
    registry: Registry,
    names: Iterable[str],
    limit: float,
    *,
    interval: float = 0.05,
    elsewhere: frozenset[MachineID] = frozenset(),
) -> dict[UnitName, float]:
    """Monotonic time at which each unit was first seen active through ``registry.list_unit_states`` (what
    ``fleetctl list-units`` reads), polled every ``interval`` s for at most ``limit`` s; states on machines in
    ``elsewhere`` do not count. Units never seen are missing from the result. Reads are ranges and Txns:
    they cost etcd no watch event.
    """
    wanted = sorted(set(names))
    seen: dict[UnitName, float] = {}
    deadline = time.monotonic() + limit
    while len(seen) < len(wanted):
        pending = [n for n in wanted if n not in seen]
        states = await registry.list_unit_states(pending)
        now = time.monotonic()
        for state in states:
            if state.active_state == "active" and state.machine_id not in elsewhere:
                seen.setdefault(state.name, now)
        if len(seen) >= len(wanted) or now > deadline:
            break
        await asyncio.sleep(interval)
    return seen


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
    engine: SimEngine | None = None
    engine_task: asyncio.Task[None] | None = None

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
        engines: int | None = None,
        engine_clients: int | None = None,
        engine_interval: float = ENGINE_INTERVAL,
        engine_ttl: float = ENGINE_TTL,
        standby_mirrors: bool = False,
        prefix: str = PREFIX,
        request_timeout: float = 30.0,
        quiet: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.ttl = ttl
        self.prefix = prefix
        self._clients = clients
        self._engine_count = engines  # None: one candidate per machine
        self._engine_clients = clients if engine_clients is None else engine_clients
        self._engine_interval = engine_interval
        self._engine_ttl = engine_ttl
        self._engine_class = MirroringEngine if standby_mirrors else SimEngine
        self._timeout = request_timeout
        self.kvs: list[EtcdKV] = []
        self._engine_kvs: list[EtcdKV] = []
        self.machines: list[SimMachine] = []
        self.engines: list[SimEngine] = []
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

    @property
    def per_machine_engines(self) -> bool:
        return self._engine_count is None

    async def __aenter__(self) -> SimCluster:
        self.kvs = [EtcdKV([self.endpoint], request_timeout=self._timeout) for _ in range(self._clients)]
        await self.registry.ensure_schema()
        count = self._engine_count or 0
        if count or self.per_machine_engines:
            # Engines never share a client with agents: a leader's backlogged prefix watches on a stream
            # shared with hundreds of simulated agents delayed those agents' watch creation by seconds.
            pool = self._engine_clients if self.per_machine_engines else count
            self._engine_kvs = [
                EtcdKV([self.endpoint], request_timeout=self._timeout) for _ in range(max(1, pool))
            ]
        for index in range(count):
            engine = self._engine(index, f"engine-{index}")
            self._engine_tasks.append(asyncio.create_task(engine.run()))
        if count and not await self.wait_for_leader(3 * self._engine_ttl):
            raise RuntimeError("no engine became leader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _engine(self, index: int, candidate: str) -> SimEngine:
        engine = self._engine_class(
            self._engine_kvs[index % len(self._engine_kvs)],
            candidate,
            prefix=self.prefix,
            interval=self._engine_interval,
            ttl=self._engine_ttl,
            grace=self.ttl,
        )
        self.engines.append(engine)
        return engine

    def leader(self) -> SimEngine | None:
        return next((e for e in self.engines if e.is_leader), None)

    async def wait_for_leader(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while self.leader() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _leader_elected(self, limit: float) -> bool:
        """Whether some candidate holds the leader key (it may be in another process) within ``limit`` s."""
        deadline = time.monotonic() + limit
        while await self.kvs[0].get(self.registry.keys.leader) is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
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
        """Start ``count`` machines (in waves) and return once each agent is registered with its mirror listed
        (and, with one engine candidate per machine, once one of them leads).

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
                machine = SimMachine(agent, units, asyncio.create_task(agent.run()))
                if self.per_machine_engines:
                    machine.engine = self._engine(index, str(mid))
                    machine.engine_task = asyncio.create_task(machine.engine.run())
                batch.append(machine)
            await self._until_up(batch)
            added += batch
            self.machines += batch
        if self.per_machine_engines and added and not await self._leader_elected(3 * self._engine_ttl):
            raise RuntimeError("no engine candidate became leader")
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
                for task in (m.task, m.engine_task):
                    if task is not None and task.done():
                        task.result()  # raises the agent's or the engine's failure
            pending = [m for m in pending if not (m.agent.registered and m.agent.mirror.ready.is_set())]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} simulated machines did not come up in {limit:.0f}s")
            await asyncio.sleep(0.05)

    async def kill(self, machine: SimMachine) -> None:
        """kill -9: the agent and the engine candidate stop (no keep-alive, no clean-up, no resignation);
        their leases expire after their TTLs."""
        for task in (machine.task, machine.engine_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if machine.engine is not None:
            self.engines.remove(machine.engine)
        self.machines.remove(machine)

    def running(self, name: str) -> list[SimMachine]:
        """Machines on which ``name`` is active right now (the fake systemd's view)."""
        return [m for m in self.machines if m.units._state(UnitName(name)).active_state == "active"]

    async def close(self) -> None:
        tasks = [m.task for m in self.machines] + self._engine_tasks
        tasks += [m.engine_task for m in self.machines if m.engine_task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for kv in [*self.kvs, *self._engine_kvs]:
            with contextlib.suppress(Exception):
                await kv.close()
        self.machines.clear()
        self.engines.clear()
        if self._saved_level is not None:
            logging.getLogger("fleetd").setLevel(self._saved_level)
            self._saved_level = None
