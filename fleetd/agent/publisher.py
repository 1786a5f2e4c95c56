"""The unit-state publisher: systemd states of this machine's fleet units, written to etcd on change only.

Names are marked dirty (by a PropertiesChanged-driven ``changes()`` event, by a task the agent ran, or by the
periodic resync); ``flush`` reads all dirty names' states from systemd in one batched call and writes only
those that differ from what was last published, on the agent's lease. A name the agent no longer runs has
its published state removed. A failed write keeps the name dirty for the next flush.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from fleetd.agent.plan import CurrentUnit
from fleetd.model import MachineID, UnitName, UnitState
from fleetd.registry.registry import Registry
from fleetd.systemd.protocol import SystemdState, UnitManager

__all__ = ["StatePublisher"]

logger = logging.getLogger(__name__)


class StatePublisher:
    def __init__(self, registry: Registry, units: UnitManager, machine_id: MachineID) -> None:
        self._registry = registry
        self._units = units
        self._machine_id = machine_id
        self.lease = 0
        self.published: dict[UnitName, UnitState] = {}
        self._dirty: set[UnitName] = set()

    @property
    def dirty(self) -> frozenset[UnitName]:
        return frozenset(self._dirty)

    def mark(self, names: Iterable[UnitName]) -> None:
        self._dirty.update(names)

    def mark_all(self, applied: Mapping[UnitName, CurrentUnit]) -> None:
        """The periodic resync: every unit the agent runs or has published becomes dirty."""
        self._dirty.update(applied)
        self._dirty.update(self.published)

    def new_lease(self, lease: int, applied: Mapping[UnitName, CurrentUnit]) -> None:
        """States published on an old lease died with it: forget them and publish everything again."""
        self.lease = lease
        self.published.clear()
        self._dirty.update(applied)

    async def flush(self, applied: Mapping[UnitName, CurrentUnit]) -> int:
        """Publish the dirty names' changed states; returns how many records were written or removed.

        Raises RegistryError (the unwritten names stay dirty) or SystemdError (all stay dirty).
        """
        if not self._dirty:
            return 0
        names = sorted(self._dirty)
        # Taken out of the dirty set before reading systemd: a change signalled while this flush runs marks
        # the name again and is published by the next flush, not lost.
        self._dirty.difference_update(names)
        done: set[UnitName] = set()
        try:
            running = [name for name in names if name in applied]
            states = await self._units.states(running) if running else {}
            writes = 0
            for name in names:
                writes += await self._flush_one(name, applied.get(name), states.get(name))
                done.add(name)
            return writes
        except BaseException:
            self._dirty.update(n for n in names if n not in done)
            raise

    async def _flush_one(self, name: UnitName, unit: CurrentUnit | None, systemd: SystemdState | None) -> int:
        if unit is None or systemd is None:
            if name not in self.published:
                return 0
            await self._registry.remove_state(name, self._machine_id)
            del self.published[name]
            logger.debug("unit state removed unit=%s", name)
            return 1
        state = UnitState(
            name=name,
            machine_id=self._machine_id,
            load_state=systemd.load_state,
            active_state=systemd.active_state,
            sub_state=systemd.sub_state,
            hash=unit.hash,
            state=unit.state,
        )
        if self.published.get(name) == state:
            return 0
        await self._registry.publish_state(state, self.lease)
        self.published[name] = state
        logger.debug(
            "unit state published unit=%s state=%s/%s/%s",
            name,
            state.load_state,
            state.active_state,
            state.sub_state,
        )
        return 1

    async def remove_all(self) -> None:
        """Remove every state this machine published (shutdown)."""
        for name in sorted(self.published):
            await self._registry.remove_state(name, self._machine_id)
            del self.published[name]
        self._dirty.clear()
