"""Builds the engine's ClusterSnapshot from the mirrored keyspace, skipping (and reporting once) bad data.

The builder keeps its own copy of the keys it was given and what it made of each, so a leader's pass
costs what changed since the last one: ``update`` applies the keys put or deleted since then (a Mirror's
change log) and re-decides only the units, schedule entries and body references they touch; ``build``
starts over from whole mappings (a first pass, a relist, ``fleetctl plan``). Both give the same snapshot,
the same referenced and unreferenced bodies and the same problems as a build from scratch would.

Each body is parsed once per hash and each decoded value is cached by (key, mod revision), and an unchanged
unit is the same ``Unit`` object as in the last build. A unit whose record, target state or body is bad
(its name not a valid unit name, its body not usable by ``fleetd.unitfile.body``'s policy) is left out of
the snapshot together with its schedule entries, so the planner neither places nor removes it; a schedule
entry with a valid key and a malformed value is handed to the planner as an extra entry to delete (the
engine owns ``schedule/``); keys that are not keys of the layout are reported and left alone. Every
problem is reported once per (key, mod revision).

Machines, cordons, metadata, failures and reschedule records (thousands at most) are re-read whole when
their prefix changed; the snapshot's units and schedule are copies, so the builder never changes a
snapshot it handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleetd.engine.decoders import Count, Decoders, Failure, Named, Pinned, Placed, mirror_decoders
from fleetd.errors import FleetError
from fleetd.metadata import merged
from fleetd.model import MachineID, MachineState, Requirements, Rescheduled, TargetState, Unit, UnitName
from fleetd.registry.keyspace import BadRecord, Keyspace, ReportOnce, UnitRecord
from fleetd.registry.kv import KeyValue
from fleetd.registry.mirror import Decoded, Decoder
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit

__all__ = ["BodyParser", "Built", "Changes", "Entry", "SnapshotBuilder", "mirror_decoders"]

Entry = KeyValue | Decoded  # a key as read (decoded here, cached per mod revision) or as a Mirror decoded it
Changes = Mapping[str, Mapping[str, Entry | None]]  # prefix -> key -> its entry now (None: deleted)

# Unit-file text -> a function from a unit name to its [X-Fleet] requirements (specifiers expanded for
# that name). Either step raises FleetError on a bad body. Called once per body hash.
BodyParser = Callable[[str], Callable[[UnitName], Requirements]]


@dataclass(frozen=True, slots=True)
class Built:
    snapshot: ClusterSnapshot
    referenced: frozenset[str]  # body hashes referenced by a unit record, a schedule entry or a hash pin
    problems: tuple[str, ...]  # bad data first seen in this build (the caller logs each once)
    unreferenced: Mapping[str, int] | None = None  # bodies (hash -> mod revision) nothing references


def _add(index: dict[str, str | set[str]], key: str, member: str) -> None:
    """Add to a one-to-few index kept as a bare string while it holds one member (most do)."""
    found = index.get(key)
    if found is None:
        index[key] = member
    elif isinstance(found, str):
        if found != member:
            index[key] = {found, member}
    else:
        found.add(member)


def _discard(index: dict[str, str | set[str]], key: str, member: str) -> None:
    found = index.get(key)
    if found == member:
        del index[key]
    elif isinstance(found, set):
        found.discard(member)
        if len(found) == 1:
            index[key] = next(iter(found))


def _members(index: Mapping[str, str | set[str]], key: str) -> tuple[str, ...]:
    found = index.get(key)
    if found is None:
        return ()
    return (found,) if isinstance(found, str) else tuple(found)


class SnapshotBuilder:
    """Turns mirrored key-values into a ClusterSnapshot; keeps its inputs and parse caches across passes."""

    def __init__(self, keys: Keyspace, parse_body: BodyParser) -> None:
        self._keys = keys
        self._parse_body = parse_body
        self._bodies: dict[str, Callable[[UnitName], Requirements] | FleetError] = {}
        self._decoded: dict[str, tuple[int, object]] = {}
        self._reported = ReportOnce()
        self._decoders = Decoders(keys)
        self._problems: list[str] = []
        self._reset()

    def _reset(self) -> None:
        """Forget the inputs (caches stay): the next update starts from nothing."""
        keys = self._keys
        self._raw: dict[str, dict[str, Entry]] = {
            prefix: {} for prefix in (
                keys.machines, keys.metadata, keys.cordons, keys.units, keys.targets, keys.bodies,
                keys.schedules, keys.failed, keys.reschedules,
            )
        }
        self._bodies_revision = -1
        self._live: dict[MachineID, MachineState] = {}
        self._cordoned: frozenset[MachineID] = frozenset()
        self._units: dict[UnitName, Unit] = {}  # the units built: an unchanged one is reused
        self._skipped: set[UnitName] = set()  # units with a valid key left out (their entries too)
        self._unit_refs: dict[str, str] = {}  # units/ key -> the body hash its record references
        self._users: dict[str, str | set[str]] = {}  # body hash -> units/ keys referencing it
        self._awaiting: set[str] = set()  # units/ keys skipped for a missing body
        self._entries_of: dict[str, str | set[str]] = {}  # unit name -> its schedule/ entry keys
        self._placed: dict[UnitName, ScheduledUnit] = {}
        self._extra: dict[UnitName, tuple[tuple[UnitName, MachineID], ...]] = {}
        # unit name -> hashes its entries reference, kept only when that is not just its placed entry's hash
        # (one entry, as nearly every unit has: 100,000 one-item tuples saved)
        self._entry_refs: dict[UnitName, tuple[str, ...]] = {}
        self._pin_refs: dict[str, str] = {}  # pin key -> the hash it pins
        self._refs: dict[str, int] = {}  # body hash -> references (records, entries, pins)
        self._orphans: set[str] = set()  # valid bodies/ keys whose hash nothing references

    # Entry points -----------------------------------------------------------------------------------

    def build(
        self,
        revision: int,
        *,
        machines: Mapping[str, Entry],
        units: Mapping[str, Entry],
        targets: Mapping[str, Entry],
        bodies: Mapping[str, KeyValue],
        schedule: Mapping[str, Entry],
        bodies_revision: int = 0,
        cordons: Mapping[str, Entry] | None = None,
        metadata: Mapping[str, Entry] | None = None,
        failed: Mapping[str, Entry] | None = None,
        rescheduled: Mapping[str, Entry] | None = None,
    ) -> Built:
        """A snapshot of exactly these keys, from scratch. ``bodies_revision``: how far the bodies were
        mirrored; a unit newer than that whose body is missing is skipped quietly (its body was written
        in the same Txn and is still on its way)."""
        keys = self._keys
        given: dict[str, Mapping[str, Entry]] = {
            keys.machines: machines, keys.units: units, keys.targets: targets, keys.bodies: bodies,
            keys.schedules: schedule, keys.cordons: cordons or {}, keys.metadata: metadata or {},
            keys.failed: failed or {}, keys.reschedules: rescheduled or {},
        }
        return self.update(revision, given, bodies_revision=bodies_revision, complete=True)

    def update(
        self, revision: int, changes: Changes, *, bodies_revision: int = 0, complete: bool = False
    ) -> Built:
        """A snapshot after applying ``changes`` (prefix -> key -> entry, None for a deleted key) to the
        keys of the last build; with ``complete`` the changes are every key there is (start over)."""
        if complete:
            previous = self._units
            self._reset()
        else:
            previous = {}
        self._problems = []
        raw, keys = self._raw, self._keys
        unknown = changes.keys() - raw.keys()
        if unknown:
            raise ValueError(f"changes under prefixes the builder does not read: {sorted(unknown)}")
        dirty_units: dict[str, None] = {}  # in change order
        dirty_names: dict[UnitName, None] = {}
        machines_changed = complete
        for prefix, changed in changes.items():
            if not changed:
                continue
            if prefix == keys.units:
                dirty_units.update(dict.fromkeys(changed))
            elif prefix == keys.targets:
                cut = len(keys.targets)
                dirty_units.update(dict.fromkeys(keys.units + key[cut:] for key in changed))
            elif prefix == keys.bodies:
                self._bodies_changed(changed, dirty_units)
            elif prefix == keys.schedules:
                self._schedule_changed(changed, dirty_names)
                continue  # stored there
            elif prefix in (keys.machines, keys.metadata, keys.cordons):
                machines_changed = True
            self._store(raw[prefix], changed)
        if bodies_revision != self._bodies_revision:
            self._bodies_revision = bodies_revision
            dirty_units.update(dict.fromkeys(self._awaiting))
        for key in dirty_units:
            name = self._unit(key, previous)
            if name is not None:
                dirty_names[name] = None
        for name in dirty_names:
            self._entries(name)
        if machines_changed:
            self._machines()
        if complete:  # decoded values of keys no longer there
            self._decoded = {k: v for k, v in self._decoded.items() if any(k in r for r in raw.values())}
        failures, counted = self._failures(), self._reschedules()
        if len(self._bodies) > 2 * len(self._refs) + 64:  # forget bodies of destroyed units now and then
            self._bodies = {h: v for h, v in self._bodies.items() if h in self._refs}
        extra = tuple(sorted(e for entries in self._extra.values() for e in entries))
        snapshot = ClusterSnapshot(
            revision, self._live, dict(self._units), dict(self._placed), extra, cordoned=self._cordoned,
            failed=failures, rescheduled=counted,
        )
        cut, bodies = len(keys.bodies), raw[keys.bodies]
        unreferenced = {key[cut:]: bodies[key].mod_revision for key in self._orphans}
        if not self._orphans:
            self._orphans = set()  # an emptied set keeps its table: a first build held every body in it
        return Built(snapshot, frozenset(self._refs), tuple(self._problems), unreferenced)

    # Keys -------------------------------------------------------------------------------------------

    def _store(self, stored: dict[str, Entry], changed: Mapping[str, Entry | None]) -> None:
        for key, entry in changed.items():
            if entry is None:
                stored.pop(key, None)
                self._decoded.pop(key, None)
            else:
                stored[key] = entry

    def _decode(self, entry: Entry, decoder: Decoder) -> object:
        if isinstance(entry, Decoded):
            return entry.record
        cached = self._decoded.get(entry.key)
        if cached is not None and cached[0] == entry.mod_revision:
            return cached[1]
        try:
            value: object = decoder(entry)
        except BadRecord as exc:
            value = exc
        self._decoded[entry.key] = (entry.mod_revision, value)
        return value

    def _report(self, key: str, mod_revision: int, problem: str) -> None:
        if self._reported.first(key, mod_revision):
            self._problems.append(problem)

    def _ref(self, unit_hash: str) -> None:
        count = self._refs.get(unit_hash, 0)
        self._refs[unit_hash] = count + 1
        if not count:
            self._orphans.discard(self._keys.body(unit_hash))

    def _unref(self, unit_hash: str) -> None:
        count = self._refs[unit_hash] - 1
        if count:
            self._refs[unit_hash] = count
            return
        del self._refs[unit_hash]
        key = self._keys.body(unit_hash)
        if key in self._raw[self._keys.bodies] and self._is_body_key(key):
            self._orphans.add(key)

    def _is_body_key(self, key: str) -> bool:
        try:
            self._keys.body_hash(key)
        except BadRecord:
            return False
        return True

    # Bodies -----------------------------------------------------------------------------------------

    def _bodies_changed(self, changed: Mapping[str, Entry | None], dirty_units: dict[str, None]) -> None:
        """Note bad keys and bodies nothing references; the units of a changed body are decided again."""
        cut = len(self._keys.bodies)
        for key, entry in changed.items():
            unit_hash = key[cut:]
            dirty_units.update(dict.fromkeys(_members(self._users, unit_hash)))
            if entry is None:
                self._orphans.discard(key)
                continue
            try:
                self._keys.body_hash(key)
            except BadRecord as exc:
                self._report(key, entry.mod_revision, f"ignoring {exc}")
                continue
            if unit_hash not in self._refs:
                self._orphans.add(key)

    # Units ------------------------------------------------------------------------------------------

    def _unit(self, key: str, previous: Mapping[UnitName, Unit]) -> UnitName | None:
        """Decide one units/ key again: forget what it gave, then build its unit (or skip it). Returns the
        unit name whose schedule entries may need deciding again (None for a key that names no unit)."""
        keys, d = self._keys, self._decoders
        name = UnitName(key[len(keys.units):])
        last = self._units.pop(name, None) or previous.get(name)
        self._skipped.discard(name)
        self._awaiting.discard(key)
        old_hash = self._unit_refs.pop(key, None)
        if old_hash is not None:
            _discard(self._users, old_hash, key)
            self._unref(old_hash)
        kv = self._raw[keys.units].get(key)
        if kv is None:
            return name
        named = self._decode(kv, d.unit)
        if not isinstance(named, Named):
            self._report(kv.key, kv.mod_revision, f"ignoring {named}")
            return None
        name, record = named.name, named.record  # the decoded name: one string shared with the mirror
        target_kv = self._raw[keys.targets].get(keys.target(name))
        target: object = TargetState.INACTIVE
        if target_kv is not None:
            target = self._decode(target_kv, d.target)
        if not isinstance(record, UnitRecord) or not isinstance(target, TargetState):
            bad = target_kv if isinstance(record, UnitRecord) and target_kv is not None else kv
            self._skipped.add(name)
            problem = f"skipping unit {name}: {record if bad is kv else target}"
            self._report(bad.key, bad.mod_revision, problem)
            return name
        self._unit_refs[key] = record.hash
        _add(self._users, record.hash, key)
        self._ref(record.hash)
        body_key = keys.body(record.hash)
        body = self._raw[keys.bodies].get(body_key)
        if body is None:
            self._skipped.add(name)
            self._awaiting.add(key)
            if kv.mod_revision <= self._bodies_revision:
                self._report(kv.key, kv.mod_revision, f"skipping unit {name}: its body {body_key} is missing")
            return name
        if last is not None and last.hash == record.hash:
            requirements: Requirements | FleetError = last.requirements  # a hash's body never changes
        else:
            requirements = self._requirements_of(body, record.hash, name)
        if isinstance(requirements, FleetError):
            self._skipped.add(name)
            problem = f"skipping unit {name}: bad unit file at {body.key}: {requirements}"
            self._report(body.key, body.mod_revision, problem)
            return name
        unit = last
        if unit is None or (unit.hash, unit.requirements, unit.target_state) != (
            record.hash, requirements, target
        ):
            unit = Unit(name, record.hash, requirements, target)
        self._units[name] = unit
        return name

    def _requirements_of(self, body: Entry, unit_hash: str, name: UnitName) -> Requirements | FleetError:
        """The requirements of a unit new to this builder (or with a new hash): its body parsed once per
        hash, then expanded for its name (an unchanged unit keeps its ``Unit`` and needs neither)."""
        parsed = self._bodies.get(unit_hash)
        if parsed is None:
            try:
                if not isinstance(body, KeyValue):
                    raise FleetError(f"body {body.key} was decoded, not kept as text")
                parsed = self._parse_body(body.value)
            except FleetError as exc:
                parsed = exc
            self._bodies[unit_hash] = parsed
        if isinstance(parsed, FleetError):
            return parsed
        try:
            return parsed(name)
        except FleetError as exc:
            return exc

    # Schedule ---------------------------------------------------------------------------------------

    def _schedule_changed(
        self, changed: Mapping[str, Entry | None], dirty_names: dict[UnitName, None]
    ) -> None:
        """Store changed schedule/ keys: pins (re)referenced, bad keys reported, entries regrouped by unit."""
        stored, decode = self._raw[self._keys.schedules], self._decoders.scheduled
        for key, entry in changed.items():
            old = stored.get(key)
            if old is not None:
                found = self._decode(old, decode)
                if isinstance(found, Placed):
                    _discard(self._entries_of, found.name, key)
                    dirty_names[found.name] = None
            pinned = self._pin_refs.pop(key, None)
            if pinned is not None:
                self._unref(pinned)
            self._store(stored, {key: entry})
            if entry is None:
                continue
            found = self._decode(entry, decode)
            if isinstance(found, Pinned):  # referenced while pinned; never removed here
                if isinstance(found.hash, BadRecord):
                    self._report(key, entry.mod_revision, f"ignoring hash pin: {found.hash}")
                else:
                    self._pin_refs[key] = found.hash
                    self._ref(found.hash)
            elif isinstance(found, Placed):
                _add(self._entries_of, found.name, key)
                dirty_names[found.name] = None
            else:
                self._report(key, entry.mod_revision, f"ignoring {found}")

    def _entries(self, name: UnitName) -> None:
        """Decide one unit's schedule entries again: the lowest machine's is placed, the rest (and entries
        with a bad value) are extra; none of a skipped unit's count."""
        placed = self._placed.pop(name, None)
        self._extra.pop(name, None)
        held = self._entry_refs.pop(name, None)
        for unit_hash in held if held is not None else (() if placed is None else (placed.hash,)):
            self._unref(unit_hash)
        if name in self._skipped:
            return
        stored, decode = self._raw[self._keys.schedules], self._decoders.scheduled
        extra: list[tuple[UnitName, MachineID]] = []
        refs: list[str] = []
        current: ScheduledUnit | None = None
        for key in _members(self._entries_of, name):
            kv = stored[key]
            found = self._decode(kv, decode)
            assert isinstance(found, Placed)  # indexed as one
            entry = found.entry
            if not isinstance(entry, ScheduledUnit):
                self._report(kv.key, kv.mod_revision, f"removing schedule entry: {entry}")
                extra.append((name, found.machine_id))
                continue
            refs.append(entry.hash)
            if current is None or found.machine_id < current.machine_id:
                if current is not None:
                    extra.append((name, current.machine_id))
                current = entry
            else:
                extra.append((name, found.machine_id))
        if current is not None:
            self._placed[name] = current
        if extra:
            self._extra[name] = tuple(extra)
        if refs:
            if current is None or refs != [current.hash]:
                self._entry_refs[name] = tuple(refs)
            for unit_hash in refs:
                self._ref(unit_hash)

    # Machines, failures, reschedules (small: read whole) --------------------------------------------

    def _machines(self) -> None:
        keys, d, raw = self._keys, self._decoders, self._raw
        live: dict[MachineID, MachineState] = {}
        for kv in raw[keys.machines].values():
            machine = self._decode(kv, d.machine)
            if isinstance(machine, MachineState):
                live[machine.id] = machine
            else:
                self._report(kv.key, kv.mod_revision, f"skipping machine: {machine}")
        for kv in raw[keys.metadata].values():
            overrides = self._decode(kv, d.overrides)
            if isinstance(overrides, tuple):
                machine_id, values = overrides
                if machine_id in live:
                    live[machine_id] = merged(live[machine_id], values)
            else:
                self._report(kv.key, kv.mod_revision, f"ignoring live metadata: {overrides}")
        cordoned: set[MachineID] = set()
        for kv in raw[keys.cordons].values():
            cordon = self._decode(kv, d.cordon)
            if isinstance(cordon, str):
                cordoned.add(MachineID(cordon))
            else:
                self._report(kv.key, kv.mod_revision, f"ignoring cordon: {cordon}")
        self._live, self._cordoned = live, frozenset(cordoned)  # new objects: snapshots keep the old ones

    def _failures(self) -> dict[UnitName, frozenset[MachineID]]:
        failures: dict[UnitName, set[MachineID]] = {}
        for kv in self._raw[self._keys.failed].values():
            failure = self._decode(kv, self._decoders.failure)
            if not isinstance(failure, Failure):
                self._report(kv.key, kv.mod_revision, f"ignoring {failure}")
            elif isinstance(failure.hash, BadRecord):
                self._report(kv.key, kv.mod_revision, f"ignoring failure record: {failure.hash}")
            elif failure.name in self._units and self._units[failure.name].hash == failure.hash:
                failures.setdefault(failure.name, set()).add(failure.machine_id)  # at its current hash
        return {name: frozenset(machines) for name, machines in failures.items()}

    def _reschedules(self) -> dict[UnitName, Rescheduled]:
        counted: dict[UnitName, Rescheduled] = {}
        for kv in self._raw[self._keys.reschedules].values():
            count = self._decode(kv, self._decoders.rescheduled)
            if not isinstance(count, Count):
                self._report(kv.key, kv.mod_revision, f"ignoring {count}")
            elif isinstance(count.record, BadRecord):
                self._report(kv.key, kv.mod_revision, f"ignoring reschedule record: {count.record}")
            else:
                counted[count.name] = count.record
        return counted
