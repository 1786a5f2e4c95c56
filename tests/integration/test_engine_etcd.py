"""The elected engine on real etcd: one leader, takeover, deposed writes refused, re-placement, bad data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import pytest

from fleetd.engine.engine import Engine
from fleetd.engine.plan import EnginePlan, Schedule
from fleetd.errors import CASConflict
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry.kv import KV
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.unitfile.unit import UnitFile

TTL = 2.0


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """Poll an async predicate with a deadline."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - etcd reads, no event to wait on
            await asyncio.sleep(0.05)


async def submit(reg: Registry, name: str, extra: str = "") -> None:
    uf = UnitFile.from_text(f"[Service]\nExecStart=/bin/sleep 1000\n{extra}")
    await reg.put_units([(UnitRecord(UnitName(name), uf.hash, False, TargetState.LAUNCHED), uf.canonical)])


async def placement(reg: Registry) -> dict[str, list[str]]:
    return {n: sorted(e.machine_id for e in entries) for n, entries in (await reg.list_schedule()).items()}


class Engines:
    """Engines sharing one client; every task is cancelled (and leadership released) on exit."""

    def __init__(self, kv: KV, prefix: str) -> None:
        self.kv, self.prefix = kv, prefix
        self.running: dict[str, tuple[Engine, asyncio.Task[None]]] = {}

    def start(self, machine_id: str, interval: float = 1.0) -> Engine:
        engine = Engine(self.kv, machine_id, prefix=self.prefix, interval=interval, ttl=TTL, grace=TTL)
        self.running[machine_id] = (engine, asyncio.create_task(engine.run()))
        return engine

    def leaders(self) -> list[Engine]:
        return [engine for engine, _task in self.running.values() if engine.is_leader]

    async def one_leader(self, seconds: float) -> Engine:
        async def one() -> bool:
            return len(self.leaders()) == 1

        await eventually(one, seconds)
        return self.leaders()[0]

    async def stop_all(self) -> None:
        for _engine, task in self.running.values():
            task.cancel()
        for _engine, task in self.running.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_with_engines(
    aio: asyncio.Runner, kv: KV, prefix: str, test: Callable[[Engines], Awaitable[None]]
) -> None:
    async def main() -> None:
        engines = Engines(kv, prefix)
        try:
            await test(engines)
        finally:
            await engines.stop_all()

    aio.run(main())


def test_one_leader_and_a_new_one_within_a_ttl_after_its_lease_dies(aio, etcd_kv, etcd_prefix) -> None:  # type: ignore[no-untyped-def]
    async def t(engines: Engines) -> None:
        for machine_id in ("m1", "m2", "m3"):
            engines.start(machine_id)
        leader = await engines.one_leader(seconds=TTL * 2)
        stale = leader.election.leadership
        assert stale is not None
        await etcd_kv.revoke(leader.election._lease)  # the leader "dies": its lease and key are gone

        async def someone_else() -> bool:
            leaders = engines.leaders()
            return len(leaders) == 1 and leaders[0] is not leader

        await eventually(someone_else, seconds=TTL)
        reg = Registry(etcd_kv, etcd_prefix)
        plan = EnginePlan(
            0, (Schedule(UnitName("x.service"), MachineID("m1"), "a" * 40, TargetState.LAUNCHED, "r"),)
        )
        with pytest.raises(CASConflict):
            await reg.apply_plan(plan, stale)
        assert await reg.list_schedule() == {}

    run_with_engines(aio, etcd_kv, etcd_prefix, t)


def test_units_of_an_expired_machine_are_replaced_honouring_constraints(aio, etcd_kv, etcd_prefix) -> None:  # type: ignore[no-untyped-def]
    async def t(engines: Engines) -> None:
        reg = Registry(etcd_kv, etcd_prefix)
        await reg.ensure_schema()
        leases = {}
        for machine_id, role in (("m1", "web"), ("m2", "web"), ("m3", "db")):
            leases[machine_id] = await etcd_kv.grant(TTL)
            await reg.register_machine(
                MachineState(MachineID(machine_id), metadata={"role": role}), leases[machine_id]
            )
        await submit(reg, "web.service", "[X-Fleet]\nMachineMetadata=role=web\n")
        await submit(reg, "db.service", "[X-Fleet]\nMachineMetadata=role=db\n")
        engines.start("m3")

        async def placed() -> bool:
            return len(await placement(reg)) == 2

        kept = dict(leases)
        keeper = asyncio.create_task(_keep_alive(etcd_kv, kept))
        try:
            await eventually(placed, seconds=10)
            first = (await placement(reg))["web.service"][0]
            del kept[first]  # its lease now expires on etcd's own clock
            other = "m2" if first == "m1" else "m1"

            async def moved() -> bool:
                return (await placement(reg)).get("web.service") == [other]

            await eventually(moved, seconds=TTL * 2 + 5)
            assert (await placement(reg))["db.service"] == ["m3"]
        finally:
            keeper.cancel()
            for lease in leases.values():
                await etcd_kv.revoke(lease)

    run_with_engines(aio, etcd_kv, etcd_prefix, t)


def test_bad_data_is_skipped_and_the_rest_scheduled(aio, etcd_kv, etcd_prefix, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, "fleetd.engine")

    async def t(engines: Engines) -> None:
        reg = Registry(etcd_kv, etcd_prefix)
        lease = await etcd_kv.grant(60)
        await reg.register_machine(MachineState(MachineID("m1")), lease)
        for name in ("good.service", "badjson.service", "badtarget.service", "nobody.service"):
            await submit(reg, name)
        await etcd_kv.put(etcd_prefix + "units/badjson.service", "{nope")
        await etcd_kv.put(etcd_prefix + "targets/badtarget.service", "running")
        await etcd_kv.put(etcd_prefix + "units/nobody.service", '{"global":false,"hash":"' + "e" * 40 + '"}')
        engines.start("m1", interval=0.2)

        async def good_only() -> bool:
            return await placement(reg) == {"good.service": ["m1"]}

        await eventually(good_only, seconds=10)
        for text in ("malformed JSON", "invalid target state 'running'", "/bodies/eeee"):
            assert caplog.text.count(text) == 1, text
        await etcd_kv.revoke(lease)

    run_with_engines(aio, etcd_kv, etcd_prefix, t)


async def _keep_alive(kv: KV, leases: dict[str, int]) -> None:
    """Refresh the leases still in ``leases`` (removing one lets it expire)."""
    while True:
        for lease in list(leases.values()):
            await kv.keep_alive(lease)
        await asyncio.sleep(TTL / 3)
