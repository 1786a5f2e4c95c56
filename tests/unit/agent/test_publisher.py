"""The state publisher: a change signalled while a flush runs is published by the next flush, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from fleetd.agent.plan import CurrentUnit
from fleetd.agent.publisher import StatePublisher
from fleetd.model import MachineID, TargetState, UnitName
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
