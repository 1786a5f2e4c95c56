"""The unit-state publisher: systemd states of this machine's fleet units, written to etcd on change only.

Names are marked dirty (by a PropertiesChanged-driven ``changes()`` event, by a task the agent ran, or by the
periodic resync); ``flush`` reads all dirty names' states from systemd in one batched call and writes only
those that differ from what was last published, on the agent's lease, all in one packed write
(``Registry.publish_states``: one Txn for up to 128 changes). A name the agent no longer runs has its
published state removed in the same write. A failed write keeps the names dirty for the next flush.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from fleetd.agent.plan import CurrentUnit
from fleetd.model import MachineID, UnitName, UnitState
from fleetd.registry.registry import FAILED_STATE, Registry
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

        All the changes of one flush go out together, in as few Txns as the registry's packer allows (a
        burst of 100 changes is one Txn), every state on the agent's lease.
        Raises RegistryError or SystemdError; the flush's names then stay dirty (a Txn already written is
        written again by the next flush: the same value, no harm).
        """
        if not self._dirty:
            return 0
        names = sorted(self._dirty)
        # Taken out of the dirty set before reading systemd: a change signalled while this flush runs marks
        # the name again and is published by the next flush, not lost.
        self._dirty.difference_update(names)
        try:
            running = [name for name in names if name in applied]
            systemd = await self._units.states(running) if running else {}
            changed, removed = self._changes(names, applied, systemd)
            if changed or removed:
                await self._registry.publish_states(
                    changed,
                    self.lease,
                    [(name, self._machine_id) for name in removed],
                    self._unfailed(changed, removed),
                )
        except BaseException:
            self._dirty.update(names)
            raise
        for state in changed:
            self.published[state.name] = state
            logger.debug(
                "unit state published unit=%s state=%s/%s/%s",
                state.name,
                state.load_state,
                state.active_state,
                state.sub_state,
            )
        for name in removed:
            del self.published[name]
            logger.debug("unit state removed unit=%s", name)
        return len(changed) + len(removed)

    def _unfailed(self, changed: Iterable[UnitState], removed: Iterable[UnitName]) -> list[tuple[str, str]]:
        """The failure markers to delete: units published failed before, now not failed or not run."""
        names = [s.name for s in changed if s.active_state != FAILED_STATE] + list(removed)
        return [
            (name, self._machine_id)
            for name in names
            if (before := self.published.get(name)) is not None and before.active_state == FAILED_STATE
        ]

    def _changes(
        self,
        names: Iterable[UnitName],
        applied: Mapping[UnitName, CurrentUnit],
        systemd: Mapping[UnitName, SystemdState],
    ) -> tuple[list[UnitState], list[UnitName]]:
        """States that differ from what was published, and published names no longer run."""
        changed: list[UnitState] = []
        removed: list[UnitName] = []
        for name in names:
            unit, current = applied.get(name), systemd.get(name)
            if unit is None or current is None:
                if name in self.published:
                    removed.append(name)
                continue
            state = UnitState(
                name=name,
                machine_id=self._machine_id,
                load_state=current.load_state,
                active_state=current.active_state,
                sub_state=current.sub_state,
                hash=unit.hash,
                state=unit.state,
            )
            if self.published.get(name) != state:
                changed.append(state)
        return changed, removed

    async def remove_all(self) -> None:
        """Remove every state this machine published (shutdown), in as few Txns as the packer allows."""
        names = sorted(self.published)
        if names:
            await self._registry.publish_states((), self.lease, [(name, self._machine_id) for name in names])
        self.published.clear()
        self._dirty.clear()
