"""A large registry without simulating its machines: machine records under one lease, units submitted and
placed by a leading engine. For figures about the engine and about one fleetd process, where thousands of
simulated agents would only add noise (their states are not read by the engine).

    async with Filled(kv, prefix, machines=1000) as filled:
        await filled.add_units(10_000)   # submitted, then placed by filled.engine (a SimEngine, leading)
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.cluster_sim import machine_id, unit
from bench.engines import SimEngine
from fleetd.model import MachineState
from fleetd.registry import keyspace as ks
from fleetd.registry.kv import KV, MAX_TXN_OPS, Put
from fleetd.registry.registry import Registry

__all__ = ["Filled"]

LEASE_TTL = 60.0
PARALLEL = 8  # Txns in flight while writing machine records


class Filled:
    """``machines`` machine records kept alive under one lease, and an engine leading over them."""

    def __init__(self, kv: KV, prefix: str, machines: int, *, interval: float = 2.0) -> None:
        self.kv = kv
        self.registry = Registry(kv, prefix)
        self.machines = machines
        self.units = 0
        self.engine = SimEngine(kv, "fill-engine", prefix=prefix, interval=interval, ttl=10.0, grace=0.0)
        self._tasks: list[asyncio.Task[None]] = []
        self._lease = 0

    async def __aenter__(self) -> Filled:
        await self.registry.ensure_schema()
        self._lease = await self.kv.grant(LEASE_TTL)
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        keys = self.registry.keys
        ops = []
        for index in range(self.machines):
            mid = machine_id(f"{keys.prefix}fill-{index}")
            state = MachineState(mid, public_ip=f"10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}")
            ops.append(Put(keys.machine(mid), ks.encode_machine(state), self._lease))
        batches = [ops[i : i + MAX_TXN_OPS] for i in range(0, len(ops), MAX_TXN_OPS)]
        for first in range(0, len(batches), PARALLEL):
            await asyncio.gather(*(self.kv.txn([], b) for b in batches[first : first + PARALLEL]))
        self._tasks.append(asyncio.create_task(self.engine.run()))
        deadline = time.monotonic() + 30
        while not self.engine.is_leader:
            if time.monotonic() > deadline:
                raise RuntimeError("the fill engine did not lead")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_engine()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.kv.revoke(self._lease)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 4)
            await self.kv.keep_alive(self._lease)

    async def stop_engine(self) -> None:
        """Stop the fill engine and release leadership (so another candidate can lead at once)."""
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        del self._tasks[1:]
        await self.engine.election.resign()

    async def add_units(self, count: int, limit: float = 600.0) -> float:
        """Submit ``count`` more units and wait until the engine placed all units; seconds taken."""
        started = time.monotonic()
        first, self.units = self.units, self.units + count
        await self.registry.put_units([unit(f"fill-{i:06}.service") for i in range(first, self.units)])
        keys, deadline = self.registry.keys, started + limit
        while True:
            mirror = self.engine.mirror
            if mirror is not None and len(mirror.records(keys.schedules)) >= self.units:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.units} units not placed on {self.machines} machines in {limit:.0f}s"
                )
            await asyncio.sleep(0.1)
