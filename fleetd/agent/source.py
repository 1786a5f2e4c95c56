"""What this machine should run, as the agent reads it: its schedule and the global units, followed by a
watch-fed Mirror (so an idle agent reads nothing), and unit bodies read by hash once and cached."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetd.errors import FleetError, UnitFileError
from fleetd.model import NO_REQUIREMENTS, MachineID, TargetState, Unit, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord
from fleetd.registry.mirror import Mirror
from fleetd.registry.registry import Registry
from fleetd.unitfile import requirements_for
from fleetd.unitfile.unit import UnitFile

__all__ = ["DesiredSource", "Wanted"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wanted:
    """The schedule's units and the global units (with requirements), and the names left out this pass
    because their body is not in the registry."""

    scheduled: Mapping[UnitName, Unit]
    global_units: Mapping[UnitName, Unit]
    skipped: frozenset[UnitName]


@dataclass(frozen=True, slots=True)
class _Entry:
    name: UnitName
    hash: str
    state: TargetState


@dataclass(frozen=True, slots=True)
class _Body:
    text: str
    unit_file: UnitFile | None  # None when the stored text does not parse (loaded as is, no requirements)


class DesiredSource:
    def __init__(self, registry: Registry, machine_id: MachineID) -> None:
        self._registry = registry
        self._keys = registry.keys
        self._machine_id = machine_id
        self._schedule_prefix = self._keys.schedule(machine_id)
        self.mirror = Mirror(registry.kv, [self._schedule_prefix, self._keys.globals])
        self._bodies: dict[str, _Body] = {}

    @property
    def ready(self) -> bool:
        return self.mirror.ready.is_set()

    async def read(self) -> Wanted:
        """The mirrored entries, with every body they need (read by hash, cached); RegistryError when
        bodies cannot be read."""
        scheduled, global_units = self._entries()
        entries = [*scheduled.values(), *global_units.values()]
        await self._fetch({entry.hash for entry in entries})
        skipped = frozenset(entry.name for entry in entries if entry.hash not in self._bodies)
        for name in sorted(skipped):
            logger.warning("unit=%s skipped: its body is not in the registry", name)
        return Wanted(
            {n: self._unit(e) for n, e in scheduled.items() if n not in skipped},
            {n: self._unit(e) for n, e in global_units.items() if n not in skipped},
            skipped,
        )

    def text(self, unit_hash: str) -> str:
        return self._bodies[unit_hash].text

    def keep_only(self, hashes: Iterable[str]) -> None:
        """Drop cached bodies no desired unit uses any more."""
        keep = set(hashes)
        for unit_hash in [h for h in self._bodies if h not in keep]:
            del self._bodies[unit_hash]

    def _entries(self) -> tuple[dict[UnitName, _Entry], dict[UnitName, _Entry]]:
        scheduled: dict[UnitName, _Entry] = {}
        for key, kv in self.mirror.items(self._schedule_prefix).items():
            try:
                name = UnitName(self._keys.leaf(key, self._schedule_prefix))
                entry = ks.decode_schedule(key, kv.value, self._machine_id)
            except BadRecord as exc:
                logger.warning("skipping %s", exc)
                continue
            scheduled[name] = _Entry(name, entry.hash, entry.state)
        global_units: dict[UnitName, _Entry] = {}
        for key, kv in self.mirror.items(self._keys.globals).items():
            try:
                name = UnitName(self._keys.leaf(key, self._keys.globals))
                found = ks.decode_global(key, kv.value, name)
            except BadRecord as exc:
                logger.warning("skipping %s", exc)
                continue
            global_units[name] = _Entry(name, found.hash, found.state)
        return scheduled, global_units

    async def _fetch(self, hashes: set[str]) -> None:
        wanted = hashes - self._bodies.keys()
        if not wanted:
            return
        found = await self._registry.get_bodies(sorted(wanted))
        for unit_hash, text in found.items():
            try:
                unit_file: UnitFile | None = UnitFile.from_text(text)
            except UnitFileError as exc:
                logger.warning("body %s does not parse (%s); loading it without requirements", unit_hash, exc)
                unit_file = None
            self._bodies[unit_hash] = _Body(text, unit_file)

    def _unit(self, entry: _Entry) -> Unit:
        body = self._bodies[entry.hash]
        requirements = NO_REQUIREMENTS
        if body.unit_file is not None:
            try:
                requirements = requirements_for(body.unit_file, entry.name)
            except FleetError as exc:
                logger.warning("unit=%s: bad [X-Fleet] requirements ignored: %s", entry.name, exc)
        return Unit(entry.name, entry.hash, requirements, entry.state)
