"""Registry operations on MemoryKV: what each writes, reads and refuses, and Txn sizes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import pytest

from fleetd.engine.plan import EnginePlan, Schedule, Unschedule
from fleetd.errors import CASConflict, NotFound, RegistryError
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.kv import (
    MAX_TXN_OPS,
    RANGE_PAGE,
    Compare,
    CompareOp,
    CompareTarget,
    Get,
    Op,
    RangeResult,
    TxnResult,
)
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import DuplicateMachine, Registry, UnitRecord
from fleetd.registry.txn import MAX_TXN_BYTES, TxnTooLarge, size

P = "/t/"
HA = "a" * 40
HB = "b" * 40


class CountingKV(MemoryKV):
    """MemoryKV that records every Txn (compares, ops per branch, request bytes) and every range."""

    def __init__(self) -> None:
        super().__init__()
        self.txn_sizes: list[int] = []
        self.txn_bytes: list[int] = []
        self.txn_compares: list[tuple[Compare, ...]] = []
        self.txn_ops: list[tuple[Op, ...]] = []
        self.ranges: list[tuple[str, int]] = []  # (prefix, limit)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.txn_sizes.append(len(compares) + len(success))
        self.txn_bytes.append(sum(size(e) for e in (*compares, *success, *failure)))
        self.txn_compares.append(tuple(compares))
        self.txn_ops.append(tuple(success))
        return await super().txn(compares, success, failure)

    async def range(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""
    ) -> RangeResult:
        self.ranges.append((prefix, limit))
        return await super().range(prefix, revision=revision, limit=limit, start=start)


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
        assert len(kv.txn_compares) == 2
        assert all(compares == (leading,) for compares in kv.txn_compares), "leadership in every Txn"
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


async def _leading(kv: MemoryKV) -> tuple[int, Compare]:
    lease = await kv.grant(10)
    await kv.put("/t/engine/leader", "m1", lease=lease)
    created = (await kv.get("/t/engine/leader")).create_revision  # type: ignore[union-attr]
    return lease, Compare("/t/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, created)


def test_a_plan_writes_every_removal_before_any_placement_with_txns_in_flight_together() -> None:
    class Overlapping(CountingKV):
        """Records the most Txns in flight at once (each yields to the loop before it commits)."""

        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most = 0

        async def txn(
            self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
        ) -> TxnResult:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0)
            try:
                return await super().txn(compares, success, failure)
            finally:
                self.in_flight -= 1

    async def main() -> None:
        kv = Overlapping()
        reg = Registry(kv, P)
        _, leading = await _leading(kv)
        names = [UnitName(f"u{i:04}.service") for i in range(1_000)]
        await reg.apply_plan(
            EnginePlan(0, tuple(Schedule(n, MachineID("a"), HA, TargetState.LAUNCHED, "r") for n in names)),
            leading,
        )
        kv.txn_ops.clear()
        moves: list[Schedule | Unschedule] = []
        for name in names:  # each move listed placement first: the write order must not follow it
            moves += [Schedule(name, MachineID("b"), HA, TargetState.LAUNCHED, "r"),
                      Unschedule(name, MachineID("a"), "r")]
        kv.most = 0
        revision = await reg.apply_plan(EnginePlan(0, tuple(moves)), leading)
        kinds = [type(op).__name__ for ops in kv.txn_ops for op in ops]
        assert kinds.count("Delete") == kinds.count("Put") == 1_000
        last_removal = len(kinds) - 1 - kinds[::-1].index("Delete")
        assert kinds.index("Put") > last_removal, "a placement written before a removal"
        assert kv.most > 1, "Txns were written one after another"
        assert revision == kv.revision
        assert set(await reg.machine_schedule("b")) == set(names)
        assert not await reg.machine_schedule("a")
        await kv.close()

    asyncio.run(main())


def test_a_plan_stops_writing_once_leadership_is_lost_and_errors_are_not_wrapped() -> None:
    class Deposing(CountingKV):
        """Revokes the leader's lease during the fifth Txn; or fails every Txn with RegistryError."""

        def __init__(self, lease: int = 0, broken: bool = False) -> None:
            super().__init__()
            self.lease, self.broken = lease, broken

        async def txn(
            self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
        ) -> TxnResult:
            if self.broken:
                raise RegistryError("etcd unreachable")
            if len(self.txn_ops) == 4 and self.lease:
                await self.revoke(self.lease)
            return await super().txn(compares, success, failure)

    plan = EnginePlan(0, tuple(
        Schedule(UnitName(f"u{i:05}.service"), MachineID("a"), HA, TargetState.LAUNCHED, "r")
        for i in range(10_000)
    ))

    async def main() -> None:
        kv = Deposing()
        lease, leading = await _leading(kv)
        kv.lease = lease
        with pytest.raises(CASConflict, match="leadership lost"):
            await Registry(kv, P).apply_plan(plan, leading)
        batches = -(-10_000 // MAX_TXN_OPS)
        assert len(kv.txn_ops) <= 4 + 8, f"{len(kv.txn_ops)} of {batches} Txns tried after the loss"
        broken = Deposing(broken=True)
        _, leading = await _leading(broken)
        with pytest.raises(RegistryError, match="unreachable"):  # not an ExceptionGroup
            await Registry(broken, P).apply_plan(plan, leading)
        await kv.close()
        await broken.close()

    asyncio.run(main())


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


def test_large_bodies_are_split_by_bytes_and_a_unit_too_large_for_a_txn_writes_nothing() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        units = [(unit(f"u{i}.service", f"{i:040x}"), chr(ord("a") + i) * 400_000) for i in range(5)]
        await reg.put_units(units)
        assert len(kv.txn_sizes) == 3  # two 400 kB bodies per Txn, under the 1 MiB budget
        assert max(kv.txn_bytes) <= MAX_TXN_BYTES
        assert await reg.get_bodies([u.hash for u, _ in units]) == {u.hash: text for u, text in units}
        before = kv.revision
        with pytest.raises(TxnTooLarge, match=r"^the change to /t/units/big\.service is too large"):
            await reg.put_units([(unit("small.service", HB), "B"), (unit("big.service"), "x" * 2**20)])
        assert kv.revision == before, "nothing of the change is written"

    run(t)


def test_units_sharing_a_body_each_carry_it_and_it_is_put_once_per_txn() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        await reg.put_units([(unit(f"u{i:03}.service"), "A") for i in range(100)])
        for ops in kv.txn_ops:
            assert [op.key for op in ops].count("/t/bodies/" + HA) == 1
        assert len(kv.txn_ops) == 3  # 3 ops per unit, the body once per Txn: 42 units per Txn

    run(t)


def test_collect_bodies_guards_every_txn_with_leadership() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        leading = Compare("/t/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, 0)
        await reg.put_units([(unit(f"u{i}.service", f"{i:040x}"), "b") for i in range(100)])
        seen = {kv_.key.rsplit("/", 1)[1]: kv_.mod_revision for kv_ in (await kv.range("/t/bodies/")).kvs}
        kv.txn_compares.clear()
        assert await reg.collect_bodies(seen, leading) == 100
        assert len(kv.txn_compares) == 2  # 1 + 2 x 63 per Txn
        assert all(compares[0] == leading for compares in kv.txn_compares)

    run(t)


def test_every_prefix_read_is_paged_and_reads_by_name_are_txns_of_single_gets() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        lease = await kv.grant(30)
        for i in range(3):
            await reg.register_machine(MachineState(MachineID(f"m{i}")), lease)
        await reg.put_units([(unit(f"u{i}.service", state=TargetState.LAUNCHED), "A") for i in range(3)])
        await reg.apply_plan(
            EnginePlan(0, (Schedule(UnitName("u0.service"), MachineID("m0"), HA, TargetState.LOADED, "r"),)),
            Compare("/t/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, 0),
        )
        states = [UnitState(UnitName(f"u{i}.service"), MachineID("m0"), "l", "a", "", HA) for i in range(3)]
        await reg.publish_states(states, lease)
        kv.ranges.clear()
        kv.txn_ops.clear()
        assert len(await reg.list_machines()) == 3
        assert len(await reg.list_units()) == 3
        assert len(await reg.list_schedule()) == 1
        assert len(await reg.machine_schedule("m0")) == 1
        assert len(await reg.list_unit_states()) == 3
        assert len(await reg.list_unit_states(["u0.service", "u2.service"])) == 2
        assert len(await reg.get_units(["u0.service", "u1.service"])) == 2
        assert await reg.get_bodies([HA]) == {HA: "A"}
        watch = reg.watch_unit_states(["u1.service"])
        assert len(await anext(watch)) == 1
        await watch.aclose()  # type: ignore[attr-defined]
        assert len(kv.ranges) >= 9
        assert all(limit == RANGE_PAGE for _, limit in kv.ranges), kv.ranges
        assert all(isinstance(op, Get) and not op.prefix for ops in kv.txn_ops for op in ops)

    run(t)


def test_a_burst_of_state_changes_costs_at_most_two_txns_on_the_lease() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        lease = await kv.grant(30)
        states = [
            UnitState(UnitName(f"u{i:03}.service"), MachineID("m1"), "loaded", "active", "running", HA)
            for i in range(100)
        ]
        before = kv.revision
        await reg.publish_states(states, lease, removed=[("gone.service", "m1")])
        assert kv.revision - before == 1
        assert len(kv.txn_sizes) == 1
        assert {k.lease for k in (await kv.range("/t/states/")).kvs} == {lease}
        elsewhere = [dataclasses.replace(s, machine_id=MachineID("m2")) for s in states]
        await reg.publish_states(states + elsewhere, lease)
        assert kv.revision - before == 3  # 200 states: two Txns

    run(t)


def test_states_of_no_unit_read_nothing() -> None:
    async def t(kv: CountingKV, reg: Registry) -> None:
        assert await reg.list_unit_states([]) == ()
        assert kv.ranges == [] and kv.txn_sizes == []

    run(t)
