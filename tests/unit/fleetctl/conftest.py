"""A fake cluster for fleetctl's CLI tests: MemoryKV + Registry, live machines, and an agent stand-in that
publishes unit states following the target states, so commands that wait have something to wait for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from fleetctl.cli import cli
from fleetctl.client import FleetClient
from fleetctl.context import App, GlobalOptions
from fleetctl.resolve import is_global
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import UnitRecord
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile

T = TypeVar("T")

MACHINE_A = MachineState(MachineID("1a2b3c4d5e6f"), "127.0.0.12", {"role": "web", "az": "b"})
MACHINE_B = MachineState(MachineID("9f8e7d6c5b4a"), "", {})


@dataclass
class FakeCluster:
    """The registry side of a cluster; ``agent`` plays every machine's agent (first machine runs units)."""

    kv: MemoryKV = field(default_factory=lambda: MemoryKV(clock=lambda: 0.0))
    agent: bool = True
    fail_active: set[str] = field(default_factory=set)  # units (or bodies, by hash) whose start "fails"
    unplaceable: dict[str, str] = field(default_factory=dict)  # units the "engine" cannot place, and why
    stuck_activating: set[str] = field(default_factory=set)  # units systemd keeps starting
    requests: int = 0
    lease: int = 0

    def __post_init__(self) -> None:
        self.registry = Registry(self.kv)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def add_machines(self, *machines: MachineState) -> None:
        async def register() -> None:
            if not self.lease:
                self.lease = await self.kv.grant(60)
            for machine in machines:
                await self.registry.register_machine(machine, self.lease)

        self.run(register())

    def submit(self, name: str, text: str, target: TargetState = TargetState.INACTIVE) -> UnitFile:
        unit = UnitFile.from_text(text)
        record = UnitRecord(UnitName(name), unit.hash, is_global(unit, name), target)
        self.run(self.registry.put_units([(record, unit.canonical)]))
        return unit

    def publish(self, state: UnitState) -> None:
        async def go() -> None:
            if not self.lease:
                self.lease = await self.kv.grant(60)
            await self.registry.publish_state(state, self.lease)

        self.run(go())

    def states(self) -> tuple[UnitState, ...]:
        return self.run(self.registry.list_unit_states())

    def targets(self) -> dict[str, TargetState]:
        return {r.name: r.target_state for r in self.run(self.registry.list_units())}

    # The agent stand-in ------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        machines = await self.registry.list_machines()
        if not machines:
            return
        home = machines[0].id
        units = {r.name: r for r in await self.registry.list_units()}
        states = {(s.name, s.machine_id): s for s in await self.registry.list_unit_states()}
        for name, machine_id in states:
            unit = units.get(name)
            if unit is None or unit.target_state is TargetState.INACTIVE or machine_id != home:
                await self.registry.remove_state(name, machine_id)
        for name, unit in units.items():
            if unit.is_global or unit.target_state is TargetState.INACTIVE:
                continue
            if name in self.unplaceable:
                entry = ks.encode_unplaceable(ks.Unplaceable(unit.hash, self.unplaceable[name]))
                key = self.registry.keys.unplaceable_unit(name)
                if (await self.kv.get(key)) is None:
                    await self.kv.put(key, entry)
                continue
            active, sub = "inactive", "dead"
            if unit.target_state is TargetState.LAUNCHED:
                active, sub = "active", "running"
                if name in self.fail_active or unit.hash in self.fail_active:
                    active, sub = "failed", "failed"
                elif name in self.stuck_activating:
                    active, sub = "activating", "start"
            want = UnitState(name, home, "loaded", active, sub, unit.hash, unit.target_state)
            if states.get((name, home)) != want:
                await self.registry.publish_state(want, self.lease)

    async def _agent(self) -> None:
        await self._reconcile()
        async for _batch in self.kv.watch(self.registry.keys.prefix, self.kv.revision + 1):
            await self._reconcile()

    @contextlib.asynccontextmanager
    async def connect(self, _options: GlobalOptions) -> AsyncIterator[FleetClient]:
        task = asyncio.create_task(self._agent()) if self.agent else None
        try:
            yield FleetClient(self.registry)
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def invoke(self, args: Sequence[str], *, tty: bool = False, env: dict[str, str] | None = None) -> Result:
        app = App(connect=self.connect, tty=tty, attempt_seconds=0.05)
        return CliRunner().invoke(cli, list(args), obj=app, env=env, catch_exceptions=False)


@pytest.fixture
def cluster() -> FakeCluster:
    fake = FakeCluster()
    fake.add_machines(MACHINE_A)
    return fake


HELLO = "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/sleep 100\n"


def running(name: str, unit_hash: str, machine: MachineState = MACHINE_A) -> UnitState:
    """The state an agent publishes for ``name`` launched and running on ``machine``."""
    return UnitState(
        UnitName(name), machine.id, "loaded", "active", "running", unit_hash, TargetState.LAUNCHED
    )
