"""What this machine should run, as the agent reads it: its schedule and the global units, followed by a
watch-fed Mirror (so an idle agent reads nothing), and unit bodies read by hash once and cached.

Everything here is read from etcd and untrusted: an entry whose key or value does not decode, a unit whose
body is missing, and a unit whose body is not usable (``fleetd.unitfile.body``'s policy: UTF-8, at most
1 MiB, parses, valid ``[X-Fleet]``) are skipped, not loaded, each reported with one WARNING per
(key, mod revision). A skipped unit that is already loaded here is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetd.errors import UnitFileError
from fleetd.model import MachineID, TargetState, Unit, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, ReportOnce
from fleetd.registry.mirror import Mirror
from fleetd.registry.registry import Registry
from fleetd.unitfile.body import RequirementsFor, body_requirements

__all__ = ["DesiredSource", "Wanted"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wanted:
    """The schedule's units and the global units (with requirements), and the names left out this pass
    because their body is not in the registry or not usable."""

    scheduled: Mapping[UnitName, Unit]
    global_units: Mapping[UnitName, Unit]
    skipped: frozenset[UnitName]


@dataclass(frozen=True, slots=True)
class _Entry:
    name: UnitName
    hash: str
    state: TargetState
    key: str  # the schedule or globals entry, and its mod revision: what a problem is reported against
    mod_revision: int


@dataclass(frozen=True, slots=True)
class _Body:
    text: str
    requirements: RequirementsFor | UnitFileError  # the error when the body is not usable


class DesiredSource:
    def __init__(self, registry: Registry, machine_id: MachineID) -> None:
        self._registry = registry
        self._keys = registry.keys
        self._machine_id = machine_id
        self._schedule_prefix = self._keys.schedule(machine_id)
        self._pins_prefix = self._keys.pins(machine_id)
        self.mirror = Mirror(registry.kv, [self._schedule_prefix, self._keys.globals])
        self._bodies: dict[str, _Body] = {}
        self._reported = ReportOnce()

    @property
    def ready(self) -> bool:
        return self.mirror.ready.is_set()

    async def read(self) -> Wanted:
        """The mirrored entries, with every body they need (read by hash, cached); RegistryError when
        bodies cannot be read. A Global unit pinned on this machine is wanted at the pinned hash."""
        scheduled, global_units = self._entries()
        global_units = self._pinned(global_units)
        entries = [*scheduled.values(), *global_units.values()]
        await self._fetch({entry.hash for entry in entries})
        self._forget_unusable({entry.hash for entry in entries})
        units = {entry.key: self._unit(entry) for entry in entries}
        skipped = frozenset(entry.name for entry in entries if units[entry.key] is None)
        return Wanted(
            {n: u for n, e in scheduled.items() if (u := units[e.key]) is not None},
            {n: u for n, e in global_units.items() if (u := units[e.key]) is not None},
            skipped,
        )

    def text(self, unit_hash: str) -> str:
        return self._bodies[unit_hash].text

    def keep_only(self, hashes: Iterable[str]) -> None:
        """Drop cached bodies no desired unit uses any more (unusable ones stay while referenced, so they
        are neither read nor reported again)."""
        keep = set(hashes)
        for unit_hash, body in list(self._bodies.items()):
            if unit_hash not in keep and not isinstance(body.requirements, UnitFileError):
                del self._bodies[unit_hash]

    def _report(self, key: str, mod_revision: int, problem: str) -> None:
        if self._reported.first(key, mod_revision):
            logger.warning("%s", problem)

    def _pinned(self, global_units: dict[UnitName, _Entry]) -> dict[UnitName, _Entry]:
        """``global_units`` with the hash of each one pinned here (``schedule/<id>/pin/<unit>``: a rolling
        update holds this machine at that hash) in place of the ``globals/`` entry's; bad pins are skipped."""
        out = dict(global_units)
        for key, kv in self.mirror.items(self._schedule_prefix).items():
            if not key.startswith(self._pins_prefix):
                continue
            try:
                _, name = self._keys.parse_pin(key)
                unit_hash = ks.decode_pin(key, kv.value)
            except BadRecord as exc:
                self._report(key, kv.mod_revision, f"skipping {exc}")
                continue
            entry = out.get(name)
            if entry is not None:
                out[name] = _Entry(name, unit_hash, entry.state, key, kv.mod_revision)
        return out

    def _entries(self) -> tuple[dict[UnitName, _Entry], dict[UnitName, _Entry]]:
        scheduled: dict[UnitName, _Entry] = {}
        for key, kv in self.mirror.items(self._schedule_prefix).items():
            if key.startswith(self._pins_prefix):
                continue  # hash pins: see _pinned
            try:
                name = self._keys.unit_name(key, self._schedule_prefix)
                entry = ks.decode_schedule(key, kv.value, self._machine_id)
            except BadRecord as exc:
                self._report(key, kv.mod_revision, f"skipping {exc}")
                continue
            scheduled[name] = _Entry(name, entry.hash, entry.state, key, kv.mod_revision)
        global_units: dict[UnitName, _Entry] = {}
        for key, kv in self.mirror.items(self._keys.globals).items():
            try:
                name = self._keys.unit_name(key, self._keys.globals)
                found = ks.decode_global(key, kv.value, name)
            except BadRecord as exc:
                self._report(key, kv.mod_revision, f"skipping {exc}")
                continue
            global_units[name] = _Entry(name, found.hash, found.state, key, kv.mod_revision)
        return scheduled, global_units

    async def _fetch(self, hashes: set[str]) -> None:
        wanted = hashes - self._bodies.keys()
        if not wanted:
            return
        found = await self._registry.get_bodies(sorted(wanted))
        for unit_hash, text in found.items():
            try:
                requirements: RequirementsFor | UnitFileError = body_requirements(text)
            except UnitFileError as exc:
                requirements = exc
            self._bodies[unit_hash] = _Body(text, requirements)

    def _forget_unusable(self, referenced: set[str]) -> None:
        for unit_hash in [h for h, b in self._bodies.items() if isinstance(b.requirements, UnitFileError)]:
            if unit_hash not in referenced:
                del self._bodies[unit_hash]

    def _unit(self, entry: _Entry) -> Unit | None:
        """The unit of ``entry``, or None (reported once) when its body is missing or not usable."""
        body = self._bodies.get(entry.hash)
        if body is None:
            self._report(
                entry.key, entry.mod_revision, f"unit={entry.name} skipped: its body is not in the registry"
            )
            return None
        problem = body.requirements
        if not isinstance(problem, UnitFileError):
            try:
                return Unit(entry.name, entry.hash, problem(entry.name), entry.state)
            except UnitFileError as exc:
                problem = exc
        self._report(
            entry.key,
            entry.mod_revision,
            f"unit={entry.name} skipped: its body {entry.hash} is not usable: {problem}",
        )
        return None
