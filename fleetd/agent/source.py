"""What this machine should run, as the agent reads it: its schedule and the global units, followed by a
watch-fed Mirror (so an idle agent reads nothing), and unit bodies read by hash once and cached.

Everything here is read from etcd and untrusted: an entry whose key or value does not decode, a unit whose
body is missing, and a unit whose body is not usable (``fleetd.unitfile.body``'s policy: UTF-8, at most
1 MiB, parses, valid ``[X-Fleet]``) are skipped, not loaded, each reported with one WARNING per
(key, mod revision). A skipped unit that is already loaded here is left as it is.

A wake-up costs what changed: each entry is decoded once per (key, mod revision), and each unit (its
requirements expanded for its name) is built once per (name, hash, target state); bodies are immutable per
hash, so a built unit stays right until its entry changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
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
        # key -> (mod revision, the entry or None when it did not decode), for the entries mirrored now
        self._decoded: dict[str, tuple[int, _Entry | None]] = {}
        self._units: dict[tuple[UnitName, str, TargetState], Unit] = {}  # the units read last

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
        built = self._units
        self._units = {}
        units = {entry.key: self._unit(entry, built) for entry in entries}
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
        decoded = self._decoded
        self._decoded = {}
        scheduled = self._decode(self._schedule_prefix, decoded, self._decode_schedule, self._pins_prefix)
        global_units = self._decode(self._keys.globals, decoded, self._decode_global)
        return scheduled, global_units

    def _decode(
        self,
        prefix: str,
        decoded: Mapping[str, tuple[int, _Entry | None]],
        decode: Callable[[str, str, int], _Entry],
        skip: str = "",
    ) -> dict[UnitName, _Entry]:
        """The entries under ``prefix`` (but those under ``skip``: hash pins, see ``_pinned``); decoded ones
        are reused while their mod revision is the same."""
        found: dict[UnitName, _Entry] = {}
        for key, kv in self.mirror.items(prefix).items():
            if skip and key.startswith(skip):
                continue
            known = decoded.get(key)
            if known is not None and known[0] == kv.mod_revision:
                entry = known[1]
            else:
                try:
                    entry = decode(key, kv.value, kv.mod_revision)
                except BadRecord as exc:
                    self._report(key, kv.mod_revision, f"skipping {exc}")
                    entry = None
            self._decoded[key] = (kv.mod_revision, entry)
            if entry is not None:
                found[entry.name] = entry
        return found

    def _decode_schedule(self, key: str, value: str, mod_revision: int) -> _Entry:
        name = self._keys.unit_name(key, self._schedule_prefix)
        entry = ks.decode_schedule(key, value, self._machine_id)
        return _Entry(name, entry.hash, entry.state, key, mod_revision)

    def _decode_global(self, key: str, value: str, mod_revision: int) -> _Entry:
        name = self._keys.unit_name(key, self._keys.globals)
        found = ks.decode_global(key, value, name)
        return _Entry(name, found.hash, found.state, key, mod_revision)

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

    def _unit(self, entry: _Entry, built: Mapping[tuple[UnitName, str, TargetState], Unit]) -> Unit | None:
        """The unit of ``entry`` (the one in ``built`` when there is one), or None (reported once) when its
        body is missing or not usable."""
        body = self._bodies.get(entry.hash)
        if body is None:
            self._report(
                entry.key, entry.mod_revision, f"unit={entry.name} skipped: its body is not in the registry"
            )
            return None
        ident = (entry.name, entry.hash, entry.state)
        unit = built.get(ident)
        if unit is not None:
            self._units[ident] = unit
            return unit
        problem = body.requirements
        if not isinstance(problem, UnitFileError):
            try:
                unit = Unit(entry.name, entry.hash, problem(entry.name), entry.state)
            except UnitFileError as exc:
                problem = exc
            else:
                self._units[ident] = unit
                return unit
        self._report(
            entry.key,
            entry.mod_revision,
            f"unit={entry.name} skipped: its body {entry.hash} is not usable: {problem}",
        )
        return None
