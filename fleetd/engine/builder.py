"""Builds the engine's ClusterSnapshot from the mirrored keyspace, skipping (and reporting once) bad data.

Each body is parsed once per hash and each decoded value is cached by (key, mod revision), and an unchanged
unit is the same ``Unit`` object as in the last build, so a pass costs a walk over the mirror, not a re-parse
(nor 100,000 new objects for the garbage collector to track). A unit whose record, target state or body is
bad (its name not a valid unit name, its body not usable by ``fleetd.unitfile.body``'s policy) is left out
of the snapshot together with its schedule entries, so the planner neither places nor removes it; a
schedule entry with a valid key and a malformed value is handed to the planner as an extra entry to delete
(the engine owns ``schedule/``); keys that are not keys of the layout are reported and left alone. Every
problem is reported once per (key, mod revision).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleetd.errors import FleetError
from fleetd.metadata import merged
from fleetd.model import MachineID, MachineState, Requirements, Rescheduled, TargetState, Unit, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Keyspace, ReportOnce, UnitRecord
from fleetd.registry.kv import KeyValue
from fleetd.registry.mirror import Decoded, Decoder
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit

__all__ = ["BodyParser", "Built", "Entry", "SnapshotBuilder", "mirror_decoders"]

Entry = KeyValue | Decoded  # a key as read (decoded here, cached per mod revision) or as a Mirror decoded it

# Unit-file text -> a function from a unit name to its [X-Fleet] requirements (specifiers expanded for
# that name). Either step raises FleetError on a bad body. Called once per body hash.
BodyParser = Callable[[str], Callable[[UnitName], Requirements]]


@dataclass(frozen=True, slots=True)
class _Named:
    """A ``units/`` key: the valid unit name it carries, and its record (or why it is bad)."""

    name: UnitName
    record: UnitRecord | BadRecord


@dataclass(frozen=True, slots=True)
class _Placed:
    """A ``schedule/`` key: the machine and unit it names, and its entry (or why it is bad)."""

    machine_id: MachineID
    name: UnitName
    entry: ScheduledUnit | BadRecord


@dataclass(frozen=True, slots=True)
class _Pinned:
    """A ``schedule/<machine>/pin/<unit>`` key: a Global unit's hash pin there (or why its value is bad).
    Pins are fleetctl's (a rolling update of a Global unit): never an entry to place or remove."""

    machine_id: MachineID
    name: UnitName
    hash: str | BadRecord


@dataclass(frozen=True, slots=True)
class _Failure:
    """A ``failed/`` key: the unit and machine it names, and the hash that failed (or why it is bad)."""

    name: UnitName
    machine_id: MachineID
    hash: str | BadRecord


@dataclass(frozen=True, slots=True)
class _Count:
    """A ``reschedules/`` key: the unit it names, and its record (or why it is bad)."""

    name: UnitName
    record: Rescheduled | BadRecord


class _Decoders:
    """How each prefix the builder reads is decoded (raising BadRecord for a key that names nothing)."""

    def __init__(self, keys: Keyspace) -> None:
        self._keys = keys

    def machine(self, kv: KeyValue) -> MachineState:
        self._keys.machine_id(kv.key)
        machine = ks.decode_machine(kv.key, kv.value)
        if kv.key != self._keys.machine(machine.id):
            raise BadRecord(kv.key, f"record names machine {machine.id}")
        return machine

    def overrides(self, kv: KeyValue) -> tuple[MachineID, dict[str, str]]:
        return self._keys.metadata_machine(kv.key), ks.decode_metadata(kv.key, kv.value)

    def cordon(self, kv: KeyValue) -> MachineID:
        machine_id = self._keys.cordoned_machine(kv.key)
        ks.decode_cordon(kv.key, kv.value)
        return machine_id

    def unit(self, kv: KeyValue) -> _Named:
        name = self._keys.unit_name(kv.key, self._keys.units)
        try:
            record: UnitRecord | BadRecord = ks.decode_unit(kv.key, kv.value, name, TargetState.INACTIVE)
        except BadRecord as exc:  # the target is its own key
            record = exc
        if isinstance(record, UnitRecord):  # one copy of a hash for the record, schedule entry and unit
            record = UnitRecord(name, sys.intern(record.hash), record.is_global, record.target_state)
        return _Named(name, record)

    def target(self, kv: KeyValue) -> TargetState:
        return ks.decode_target(kv.key, kv.value)

    def scheduled(self, kv: KeyValue) -> _Placed | _Pinned:
        if self._keys.is_pin(kv.key):
            return self.pinned(kv)
        machine_id, name = self._keys.parse_scheduled(kv.key)
        machine_id = MachineID(sys.intern(machine_id))  # one copy per machine, not one per entry
        try:
            entry: ScheduledUnit | BadRecord = ks.decode_schedule(kv.key, kv.value, machine_id)
        except BadRecord as exc:
            entry = exc
        if isinstance(entry, ScheduledUnit):
            entry = ScheduledUnit(machine_id, sys.intern(entry.hash), entry.state)
        return _Placed(machine_id, name, entry)

    def pinned(self, kv: KeyValue) -> _Pinned:
        machine_id, name = self._keys.parse_pin(kv.key)
        try:
            unit_hash: str | BadRecord = sys.intern(ks.decode_pin(kv.key, kv.value))
        except BadRecord as exc:
            unit_hash = exc
        return _Pinned(machine_id, name, unit_hash)

    def failure(self, kv: KeyValue) -> _Failure:
        name, machine_id = self._keys.parse_failed(kv.key)
        try:
            unit_hash: str | BadRecord = records.decode_failed(kv.key, kv.value)
        except BadRecord as exc:
            unit_hash = exc
        return _Failure(name, machine_id, unit_hash)

    def rescheduled(self, kv: KeyValue) -> _Count:
        name = self._keys.unit_name(kv.key, self._keys.reschedules)
        try:
            record: Rescheduled | BadRecord = records.decode_rescheduled(kv.key, kv.value)
        except BadRecord as exc:
            record = exc
        return _Count(name, record)


def mirror_decoders(keys: Keyspace) -> dict[str, Decoder]:
    """The decoders for a leader's Mirror: every prefix the builder reads but ``bodies/`` (whose text is
    parsed here once per hash)."""
    d = _Decoders(keys)
    return {
        keys.machines: d.machine, keys.metadata: d.overrides, keys.cordons: d.cordon, keys.units: d.unit,
        keys.targets: d.target, keys.schedules: d.scheduled, keys.failed: d.failure,
        keys.reschedules: d.rescheduled,
    }


@dataclass(frozen=True, slots=True)
class Built:
    snapshot: ClusterSnapshot
    referenced: frozenset[str]  # body hashes referenced by a unit record, a schedule entry or a hash pin
    problems: tuple[str, ...]  # bad data first seen in this build (the caller logs each once)


class SnapshotBuilder:
    """Turns mirrored key-values into a ClusterSnapshot; keeps parse caches across passes."""

    def __init__(self, keys: Keyspace, parse_body: BodyParser) -> None:
        self._keys = keys
        self._parse_body = parse_body
        self._bodies: dict[str, Callable[[UnitName], Requirements] | FleetError] = {}
        self._decoded: dict[str, tuple[int, object]] = {}
        self._units: dict[UnitName, Unit] = {}  # the last build's units: reused while unchanged
        self._reported = ReportOnce()
        self._decoders = _Decoders(keys)

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
        """``bodies_revision``: how far the bodies were mirrored; a unit newer than that whose body is
        missing is skipped quietly (its body was written in the same Txn and is still on its way)."""
        problems: list[str] = []
        decoded: dict[str, tuple[int, object]] = {}
        d = self._decoders

        def decode(entry: Entry, decoder: Decoder) -> object:
            if isinstance(entry, Decoded):
                return entry.record
            cached = self._decoded.get(entry.key)
            if cached is not None and cached[0] == entry.mod_revision:
                decoded[entry.key] = cached
                return cached[1]
            try:
                value: object = decoder(entry)
            except BadRecord as exc:
                value = exc
            decoded[entry.key] = (entry.mod_revision, value)
            return value

        def report(key: str, mod_revision: int, problem: str) -> None:
            if self._reported.first(key, mod_revision):
                problems.append(problem)

        live: dict[MachineID, MachineState] = {}
        for kv in machines.values():
            machine = decode(kv, d.machine)
            if isinstance(machine, MachineState):
                live[machine.id] = machine
            else:
                report(kv.key, kv.mod_revision, f"skipping machine: {machine}")

        for kv in (metadata or {}).values():
            overrides = decode(kv, d.overrides)
            if isinstance(overrides, tuple):
                machine_id, values = overrides
                if machine_id in live:
                    live[machine_id] = merged(live[machine_id], values)
            else:
                report(kv.key, kv.mod_revision, f"ignoring live metadata: {overrides}")

        cordoned: set[MachineID] = set()
        for kv in (cordons or {}).values():
            cordon = decode(kv, d.cordon)
            if isinstance(cordon, str):
                cordoned.add(MachineID(cordon))
            else:
                report(kv.key, kv.mod_revision, f"ignoring cordon: {cordon}")

        out_units: dict[UnitName, Unit] = {}
        skipped: set[UnitName] = set()
        referenced: set[str] = set()
        for kv in units.values():
            named = decode(kv, d.unit)
            if not isinstance(named, _Named):
                report(kv.key, kv.mod_revision, f"ignoring {named}")
                continue
            name, record = named.name, named.record
            target_kv = targets.get(self._keys.target(name))
            target: object = TargetState.INACTIVE
            if target_kv is not None:
                target = decode(target_kv, d.target)
            if not isinstance(record, UnitRecord) or not isinstance(target, TargetState):
                bad = target_kv if isinstance(record, UnitRecord) and target_kv is not None else kv
                skipped.add(name)
                report(bad.key, bad.mod_revision, f"skipping unit {name}: {record if bad is kv else target}")
                continue
            referenced.add(record.hash)
            body_key = self._keys.body(record.hash)
            body = bodies.get(body_key)
            if body is None:
                skipped.add(name)
                if kv.mod_revision <= bodies_revision:
                    report(
                        kv.key, kv.mod_revision, f"skipping unit {name}: its body {body_key} is missing"
                    )
                continue
            unit = self._units.get(name)
            if unit is not None and unit.hash == record.hash:
                requirements: Requirements | FleetError = unit.requirements  # a hash's body never changes
            else:
                requirements = self._requirements_of(body.value, record.hash, name)
            if isinstance(requirements, FleetError):
                skipped.add(name)
                problem = f"skipping unit {name}: bad unit file at {body.key}: {requirements}"
                report(body.key, body.mod_revision, problem)
                continue
            if unit is None or (unit.hash, unit.requirements, unit.target_state) != (
                record.hash, requirements, target
            ):
                unit = Unit(name, record.hash, requirements, target)
            out_units[name] = unit

        for body_kv in bodies.values():
            try:
                self._keys.body_hash(body_kv.key)
            except BadRecord as exc:
                report(body_kv.key, body_kv.mod_revision, f"ignoring {exc}")

        placed: dict[UnitName, ScheduledUnit] = {}
        extra: list[tuple[UnitName, MachineID]] = []
        for kv in schedule.values():
            found = decode(kv, d.scheduled)
            if isinstance(found, _Pinned):  # referenced while pinned; never removed here
                if isinstance(found.hash, BadRecord):
                    report(kv.key, kv.mod_revision, f"ignoring hash pin: {found.hash}")
                else:
                    referenced.add(found.hash)
                continue
            if not isinstance(found, _Placed):
                report(kv.key, kv.mod_revision, f"ignoring {found}")
                continue
            machine_id, name, entry = found.machine_id, found.name, found.entry
            if name in skipped:
                continue
            if not isinstance(entry, ScheduledUnit):
                report(kv.key, kv.mod_revision, f"removing schedule entry: {entry}")
                extra.append((name, machine_id))
                continue
            referenced.add(entry.hash)
            current = placed.get(name)
            if current is None or machine_id < current.machine_id:
                if current is not None:
                    extra.append((name, current.machine_id))
                placed[name] = entry
            else:
                extra.append((name, machine_id))

        failures: dict[UnitName, set[MachineID]] = {}
        for kv in (failed or {}).values():
            failure = decode(kv, d.failure)
            if not isinstance(failure, _Failure):
                report(kv.key, kv.mod_revision, f"ignoring {failure}")
            elif isinstance(failure.hash, BadRecord):
                report(kv.key, kv.mod_revision, f"ignoring failure record: {failure.hash}")
            elif failure.name in out_units and out_units[failure.name].hash == failure.hash:
                failures.setdefault(failure.name, set()).add(failure.machine_id)  # at its current hash
        counted: dict[UnitName, Rescheduled] = {}
        for kv in (rescheduled or {}).values():
            count = decode(kv, d.rescheduled)
            if not isinstance(count, _Count):
                report(kv.key, kv.mod_revision, f"ignoring {count}")
            elif isinstance(count.record, BadRecord):
                report(kv.key, kv.mod_revision, f"ignoring reschedule record: {count.record}")
            else:
                counted[count.name] = count.record

        self._decoded, self._units = decoded, out_units
        if len(self._bodies) > 2 * len(referenced) + 64:  # forget bodies of destroyed units now and then
            self._bodies = {h: v for h, v in self._bodies.items() if h in referenced}
        snapshot = ClusterSnapshot(
            revision, live, out_units, placed, tuple(sorted(extra)), cordoned=frozenset(cordoned),
            failed={name: frozenset(machines) for name, machines in failures.items()}, rescheduled=counted,
        )
        return Built(snapshot, frozenset(referenced), tuple(problems))

    def _requirements_of(self, text: str, unit_hash: str, name: UnitName) -> Requirements | FleetError:
        """The requirements of a unit new to this builder (or with a new hash): its body parsed once per
        hash, then expanded for its name (an unchanged unit keeps its ``Unit`` and needs neither)."""
        parsed = self._bodies.get(unit_hash)
        if parsed is None:
            try:
                parsed = self._parse_body(text)
            except FleetError as exc:
                parsed = exc
            self._bodies[unit_hash] = parsed
        if isinstance(parsed, FleetError):
            return parsed
        try:
            return parsed(name)
        except FleetError as exc:
            return exc


