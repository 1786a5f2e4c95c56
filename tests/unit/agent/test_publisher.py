"""The state publisher: a change signalled while a flush runs is published by the next flush, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from fleetd.agent.plan import CurrentUnit
from fleetd.agent.publisher import StatePublisher
from fleetd.errors import RegistryError
from fleetd.model import MachineID, TargetState, UnitName
from fleetd.registry.kv import Compare, Op, TxnResult
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.systemd.fake import FakeUnitManager
from fleetd.systemd.protocol import SystemdState

UNIT = UnitName("web.service")
MACHINE = MachineID("m1")


class ChangesDuringRead(FakeUnitManager):
    """Answers the first states() with 'activating' while the unit becomes active (and says so) meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.publisher: StatePublisher | None = None
        self.reads = 0

    async def states(self, names: Sequence[UnitName]) -> Mapping[UnitName, SystemdState]:
        self.reads += 1
        if self.reads == 1:
            assert self.publisher is not None
            self.publisher.mark([UNIT])  # the PropertiesChanged of the activation arrives during the read
            return {UNIT: SystemdState("loaded", "activating", "start")}
        return {UNIT: SystemdState("loaded", "active", "running")}


def test_a_change_signalled_during_a_flush_is_published_by_the_next_one() -> None:
    async def main() -> None:
        kv = MemoryKV()
        registry = Registry(kv, "/p/")
        units = ChangesDuringRead()
        publisher = StatePublisher(registry, units, MACHINE)
        units.publisher = publisher
        publisher.lease = await kv.grant(30)
        applied = {UNIT: CurrentUnit(UNIT, "a" * 40, TargetState.LAUNCHED)}
        publisher.mark([UNIT])
        assert await publisher.flush(applied) == 1
        assert publisher.dirty == {UNIT}, "the change seen during the flush is still to be published"
        assert await publisher.flush(applied) == 1
        [state] = await registry.list_unit_states([UNIT])
        assert (state.active_state, state.sub_state) == ("active", "running")
        await kv.close()

    asyncio.run(main())


class CountingKV(MemoryKV):
    """MemoryKV counting the write requests it serves (puts, deletes, Txns)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        self.writes += 1
        return await super().put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self.writes += 1
        return await super().delete(key, prefix=prefix)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.writes += 1
        return await super().txn(compares, success, failure)


def test_a_burst_of_100_state_changes_costs_one_txn_on_the_lease_and_shutdown_one_more() -> None:
    async def main() -> None:
        kv = CountingKV()
        registry = Registry(kv, "/p/")
        names = [UnitName(f"u{i:03}.service") for i in range(100)]
        units = FakeUnitManager({name: "[Service]\nExecStart=/bin/true\n" for name in names})
        publisher = StatePublisher(registry, units, MACHINE)
        publisher.lease = await kv.grant(30)
        applied = {name: CurrentUnit(name, "a" * 40, TargetState.LOADED) for name in names}
        publisher.mark(names)
        revision = kv.revision
        assert await publisher.flush(applied) == 100
        assert (kv.writes, kv.revision - revision) == (1, 1)
        published = (await kv.range("/p/states/")).kvs
        assert len(published) == 100 and {s.lease for s in published} == {publisher.lease}
        # 40 are no longer run, 40 others started: one write for both
        for name in names[60:]:
            await units.start(name)
        publisher.mark(names)
        assert await publisher.flush({n: applied[n] for n in names[40:]}) == 80
        assert kv.writes == 2
        assert len((await kv.range("/p/states/")).kvs) == 60
        publisher.mark(names)
        assert await publisher.flush({n: applied[n] for n in names[40:]}) == 0, "nothing changed"
        assert kv.writes == 2
        await publisher.remove_all()
        assert kv.writes == 3
        assert (await kv.range("/p/states/")).kvs == ()
        await kv.close()

    asyncio.run(main())


def test_a_failed_write_keeps_every_name_of_the_flush_dirty() -> None:
    async def main() -> None:
        kv = MemoryKV()
        registry = Registry(kv, "/p/")
        names = [UnitName(f"u{i}.service") for i in range(3)]
        publisher = StatePublisher(registry, FakeUnitManager({n: "" for n in names}), MACHINE)
        publisher.lease = await kv.grant(30)
        applied = {name: CurrentUnit(name, "a" * 40, TargetState.LOADED) for name in names}
        publisher.mark(names)
        await kv.revoke(publisher.lease)  # the put on a dead lease is refused
        with pytest.raises(RegistryError):
            await publisher.flush(applied)
        assert publisher.dirty == set(names) and publisher.published == {}
        publisher.lease = await kv.grant(30)
        assert await publisher.flush(applied) == 3
        await kv.close()

    asyncio.run(main())


def test_a_failed_unit_is_marked_failed_until_it_runs_again_or_leaves() -> None:
    async def main() -> None:
        kv = MemoryKV()
        registry = Registry(kv, "/p/")
        name = UnitName("web.service")
        units = FakeUnitManager({name: "[Service]\nExecStart=/bin/true\n"})
        publisher = StatePublisher(registry, units, MACHINE)
        publisher.lease = await kv.grant(30)
        applied = {name: CurrentUnit(name, "a" * 40, TargetState.LAUNCHED)}
        marker = registry.keys.failed_unit(name, MACHINE)
        await units.start(name)
        units.crash(name)
        publisher.mark([name])
        await publisher.flush(applied)
        stored = await kv.get(marker)
        assert stored is not None and stored.lease == publisher.lease and ("a" * 40) in stored.value
        await units.start(name)  # running again: the marker goes
        publisher.mark([name])
        await publisher.flush(applied)
        assert await kv.get(marker) is None
        units.crash(name)
        publisher.mark([name])
        await publisher.flush(applied)
        assert await kv.get(marker) is not None
        publisher.mark([name])
        await publisher.flush({})  # no longer run here: state and marker go together
        assert await kv.get(marker) is None
        assert await registry.list_unit_states([name]) == ()
        await kv.close()

    asyncio.run(main())
