"""Registry operations on MemoryKV: what each writes, reads and refuses, and Txn sizes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from fleetd.engine.plan import EnginePlan, Schedule, Unschedule
from fleetd.errors import CASConflict, NotFound, RegistryError
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.kv import MAX_TXN_OPS, Compare, CompareOp, CompareTarget, Op, TxnResult
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import DuplicateMachine, Registry, UnitRecord

P = "/t/"
HA = "a" * 40
HB = "b" * 40


class CountingKV(MemoryKV):
    """MemoryKV that records the size of every Txn (ops per branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.txn_sizes: list[int] = []

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.txn_sizes.append(len(compares) + len(success))
        return await super().txn(compares, success, failure)


def run(test: Callable[[CountingKV, Registry], Awaitable[None]]) -> None:
    async def main() -> None:
        kv = CountingKV()
        try:
            await test(kv, Registry(kv, P))
        finally:
            await kv.close()

    asyncio.run(main())


def unit(
    name: str, h: str = HA, state: TargetState = TargetState.INACTIVE, is_global: bool = False
) -> UnitRecord:
    return UnitRecord(UnitName(name), h, is_global, state)


def test_schema_is_created_once_and_a_different_version_is_refused() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        await reg.ensure_schema()
        await reg.ensure_schema()
        assert (await kv.get("/t/schema")).value == "1"  # type: ignore[union-attr]
        await kv.put("/t/schema", "7")
        with pytest.raises(RegistryError, match=r"schema version '7' .*\(this fleet uses '1'\)"):
            await reg.ensure_schema()

    run(t)


def test_register_machine_refuses_a_duplicate_id_held_by_another_live_lease() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        mine, other = await kv.grant(30), await kv.grant(30)
        state = MachineState(MachineID("m1"), "10.0.0.1", {"a": "b"})
        await reg.register_machine(state, mine)
        await reg.register_machine(MachineState(MachineID("m1"), "10.0.0.2"), mine)  # refresh, same lease
        assert (await reg.list_machines())[0].public_ip == "10.0.0.2"
        with pytest.raises(
            DuplicateMachine, match=r"^machine m1 is already registered \(duplicate /etc/machine-id\?\)$"
        ):
            await reg.register_machine(state, other)
        await kv.revoke(mine)
        assert await reg.list_machines() == ()
        await reg.register_machine(state, other)
        assert (await kv.get("/t/machines/m1")).lease == other  # type: ignore[union-attr]
        await reg.remove_machine("m1")
        assert await reg.list_machines() == ()

    run(t)


def test_put_units_writes_body_record_target_and_global_entry_in_one_txn() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        await reg.put_units(
            [
                (unit("a.service", state=TargetState.LAUNCHED), "A"),
                (unit("g.service", HB, is_global=True), "B"),
            ]
        )
        assert len(kv.txn_sizes) == 1
        assert await reg.get_unit("a.service") == unit("a.service", state=TargetState.LAUNCHED)
        assert await reg.get_unit("nope.service") is None
        assert await reg.get_bodies([HA, HB, "c" * 40]) == {HA: "A", HB: "B"}
        assert await reg.get_body(HA) == "A"
        assert (await kv.get("/t/globals/g.service")).value == f'{{"hash":"{HB}","state":"inactive"}}'  # type: ignore[union-attr]
        assert await kv.get("/t/globals/a.service") is None
        # Replacing the global unit by a non-global one removes its globals/ entry.
        await reg.put_units([(unit("g.service", HB), "B")])
        assert await kv.get("/t/globals/g.service") is None
        assert [u.name for u in await reg.list_units()] == ["a.service", "g.service"]

    run(t)


def test_large_changes_are_split_into_txns_of_at_most_128_ops() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        units = [(unit(f"u{i:04}.service", f"{i:040x}"), f"body {i}") for i in range(300)]
        await reg.put_units(units)
        await reg.set_target_states({u.name: TargetState.LAUNCHED for u, _ in units})
        assert {u.target_state for u in await reg.list_units()} == {TargetState.LAUNCHED}
        assert len(await reg.get_units([u.name for u, _ in units])) == 300
        await reg.destroy_units([u.name for u, _ in units])
        assert await reg.list_units() == ()
        assert max(kv.txn_sizes) <= MAX_TXN_OPS
        assert len(kv.txn_sizes) > 10

    run(t)


def test_set_target_states_updates_globals_and_refuses_unknown_units() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        await reg.put_units([(unit("g.service", is_global=True), "G"), (unit("a.service"), "A")])
        await reg.set_target_states({"g.service": TargetState.LAUNCHED, "a.service": TargetState.LOADED})
        assert (await kv.get("/t/globals/g.service")).value.endswith('"state":"launched"}')  # type: ignore[union-attr]
        assert (await reg.get_unit("a.service")).target_state is TargetState.LOADED  # type: ignore[union-attr]
        with pytest.raises(NotFound, match=r"^unit x\.service not found$"):
            await reg.set_target_states({"x.service": TargetState.LOADED})

    run(t)


def test_list_units_skips_a_unit_with_an_unknown_target_state() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        await reg.put_units([(unit("a.service"), "A"), (unit("b.service"), "B")])
        await kv.put("/t/targets/a.service", "running")
        assert [u.name for u in await reg.list_units()] == ["b.service"]

    run(t)


def test_schedule_listing_and_plan_application_guarded_by_leadership() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        lease = await kv.grant(10)
        await kv.put("/t/engine/leader", "m1", lease=lease)
        created = (await kv.get("/t/engine/leader")).create_revision  # type: ignore[union-attr]
        leading = Compare("/t/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, created)
        plan = EnginePlan(
            0,
            tuple(
                Schedule(UnitName(f"u{i}.service"), MachineID(f"m{i % 3}"), HA, TargetState.LAUNCHED, "r")
                for i in range(200)
            ),
        )
        await reg.apply_plan(plan, leading)
        assert max(kv.txn_sizes) <= MAX_TXN_OPS
        schedule = await reg.list_schedule()
        assert len(schedule) == 200
        assert schedule[UnitName("u4.service")][0].machine_id == "m1"
        assert len(await reg.machine_schedule("m0")) == 67
        await reg.apply_plan(
            EnginePlan(0, (Unschedule(UnitName("u0.service"), MachineID("m0"), "r"),)), leading
        )
        assert UnitName("u0.service") not in await reg.machine_schedule("m0")
        # Deposed: the leader key is gone (lease revoked) -> writes are refused.
        await kv.revoke(lease)
        before = kv.revision
        with pytest.raises(CASConflict, match="leadership lost"):
            await reg.apply_plan(plan, leading)
        assert kv.revision == before

    run(t)


def test_collect_bodies_spares_a_body_rewritten_since_it_was_seen() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        leading = Compare(
            "/t/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, 0
        )  # "no leader key": holds
        await reg.put_units([(unit("a.service", HA), "A"), (unit("b.service", HB), "B")])
        seen = {h: (await kv.get(f"/t/bodies/{h}")).mod_revision for h in (HA, HB)}  # type: ignore[union-attr]
        await reg.put_units([(unit("c.service", HB), "B")])  # re-puts body B
        assert await reg.collect_bodies(seen, leading) == 1
        assert await reg.get_bodies([HA, HB]) == {HB: "B"}

    run(t)


def test_unit_states_publish_list_sorted_and_watch() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        lease = await kv.grant(10)

        def state(name: str, machine: str, active: str) -> UnitState:
            return UnitState(
                UnitName(name), MachineID(machine), "loaded", active, "x", HA, TargetState.LAUNCHED
            )

        await reg.publish_state(state("b.service", "m1", "active"), lease)
        await reg.publish_state(state("a.service", "m2", "active"), lease)
        await reg.publish_state(state("a.service", "m1", "failed"), lease)
        listed = await reg.list_unit_states()
        assert [(s.name, s.machine_id) for s in listed] == [
            ("a.service", "m1"),
            ("a.service", "m2"),
            ("b.service", "m1"),
        ]
        assert [s.machine_id for s in await reg.list_unit_states(["a.service"])] == ["m1", "m2"]

        seen: list[tuple[UnitState, ...]] = []
        watch = reg.watch_unit_states(["b.service"])
        seen.append(await anext(watch))
        await reg.publish_state(state("a.service", "m1", "active"), lease)  # not watched: no yield
        await reg.publish_state(state("b.service", "m1", "inactive"), lease)
        seen.append(await asyncio.wait_for(anext(watch), 5))
        await reg.remove_state("b.service", "m1")
        seen.append(await asyncio.wait_for(anext(watch), 5))
        await watch.aclose()  # type: ignore[attr-defined]
        assert [[s.active_state for s in states] for states in seen] == [["active"], ["inactive"], []]

    run(t)


def test_list_unit_states_skips_and_logs_each_bad_record_once(caplog: pytest.LogCaptureFixture) -> None:
    good = f'{{"load":"loaded","active":"active","sub":"running","hash":"{HA}","state":"launched"}}'

    async def t(kv: CountingKV, reg: Registry) -> None:
        await kv.put("/t/states/a.service/m1", good)
        await kv.put("/t/states/a.service/m2", good.replace('"launched"', '"inactive"'))
        await kv.put("/t/states/b.service", good)  # no machine part
        await kv.put("/t/states/b.service/m1/x", good)  # one part too many
        await kv.put("/t/states/c.service/m1", "{not json")
        await kv.put("/t/states/d.service/m1", good)
        caplog.clear()
        with caplog.at_level("WARNING", logger="fleetd.registry.registry"):
            listed = await reg.list_unit_states()
        assert [(s.name, s.machine_id, s.state) for s in listed] == [
            ("a.service", "m1", TargetState.LAUNCHED),
            ("d.service", "m1", TargetState.LAUNCHED),
        ]
        assert [r.getMessage() for r in caplog.records] == [
            "skipping bad record at /t/states/a.service/m2: state 'inactive' not allowed here",
            "skipping bad record at /t/states/b.service: expected /t/states/<a>/<b>",
            "skipping bad record at /t/states/b.service/m1/x: expected /t/states/<a>/<b>",
            "skipping bad record at /t/states/c.service/m1: malformed JSON"
            " (Expecting property name enclosed in double quotes)",
        ]

    run(t)
