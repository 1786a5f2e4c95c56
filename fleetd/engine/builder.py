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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from fleetd.errors import FleetError
from fleetd.metadata import merged
from fleetd.model import MachineID, MachineState, Requirements, Rescheduled, TargetState, Unit, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Keyspace, ReportOnce, UnitRecord
from fleetd.registry.kv import KeyValue
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit

__all__ = ["BodyParser", "Built", "SnapshotBuilder"]

# Unit-file text -> a function from a unit name to its [X-Fleet] requirements (specifiers expanded for
# that name). Either step raises FleetError on a bad body. Called once per body hash.
BodyParser = Callable[[str], Callable[[UnitName], Requirements]]


@dataclass(frozen=True, slots=True)
class Built:
    snapshot: ClusterSnapshot
    referenced: frozenset[str]  # body hashes referenced by a unit record or a schedule entry
    problems: tuple[str, ...]  # bad data first seen in this build (the caller logs each once)


class SnapshotBuilder:
    """Turns mirrored key-values into a ClusterSnapshot; keeps parse caches across passes."""

    def __init__(self, keys: Keyspace, parse_body: BodyParser) -> None:
        self._keys = keys
        self._parse_body = parse_body
        self._bodies: dict[str, Callable[[UnitName], Requirements] | FleetError] = {}
        self._requirements: dict[tuple[str, UnitName], Requirements | FleetError] = {}
        self._decoded: dict[str, tuple[int, object]] = {}
        self._units: dict[UnitName, Unit] = {}  # the last build's units: reused while unchanged
        self._reported = ReportOnce()

    def build(
        self,
        revision: int,
        *,
        machines: Mapping[str, KeyValue],
        units: Mapping[str, KeyValue],
        targets: Mapping[str, KeyValue],
        bodies: Mapping[str, KeyValue],
        schedule: Mapping[str, KeyValue],
        bodies_revision: int = 0,
        cordons: Mapping[str, KeyValue] | None = None,
        metadata: Mapping[str, KeyValue] | None = None,
        failed: Mapping[str, KeyValue] | None = None,
        rescheduled: Mapping[str, KeyValue] | None = None,
    ) -> Built:
        """``bodies_revision``: how far the bodies were mirrored; a unit newer than that whose body is
        missing is skipped quietly (its body was written in the same Txn and is still on its way)."""
        problems: list[str] = []
        decoded: dict[str, tuple[int, object]] = {}

        def decode(kv: KeyValue, decoder: Callable[[KeyValue], object]) -> object:
            cached = self._decoded.get(kv.key)
            if cached is not None and cached[0] == kv.mod_revision:
                decoded[kv.key] = cached
                return cached[1]
            try:
                value: object = decoder(kv)
            except BadRecord as exc:
                value = exc
            decoded[kv.key] = (kv.mod_revision, value)
            return value

        def report(key: str, mod_revision: int, problem: str) -> None:
            if self._reported.first(key, mod_revision):
                problems.append(problem)

        live: dict[MachineID, MachineState] = {}
        for kv in machines.values():
            machine = decode(kv, self._machine)
            if isinstance(machine, MachineState):
                live[machine.id] = machine
            else:
                report(kv.key, kv.mod_revision, f"skipping machine: {machine}")

        for kv in (metadata or {}).values():
            overrides = decode(kv, self._overrides)
            if isinstance(overrides, BadRecord):
                report(kv.key, kv.mod_revision, f"ignoring live metadata: {overrides}")
                continue
            machine_id = self._keys.metadata_machine(kv.key)
            if machine_id in live and isinstance(overrides, dict):
                live[machine_id] = merged(live[machine_id], overrides)

        cordoned: set[MachineID] = set()
        for kv in (cordons or {}).values():
            cordon = decode(kv, self._cordon)
            if isinstance(cordon, BadRecord):
                report(kv.key, kv.mod_revision, f"ignoring cordon: {cordon}")
            else:
                cordoned.add(self._keys.cordoned_machine(kv.key))

        out_units: dict[UnitName, Unit] = {}
        skipped: set[UnitName] = set()
        referenced: set[str] = set()
        for kv in units.values():
            try:
                name = self._keys.unit_name(kv.key, self._keys.units)
            except BadRecord as exc:
                report(kv.key, kv.mod_revision, f"ignoring {exc}")
                continue
            record = decode(kv, partial(_unit_record, name=name))
            target_kv = targets.get(self._keys.target(name))
            target: object = TargetState.INACTIVE
            if target_kv is not None:
                target = decode(target_kv, lambda t: ks.decode_target(t.key, t.value))
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
            requirements = self._requirements_of(body.value, record.hash, name)
            if isinstance(requirements, FleetError):
                skipped.add(name)
                problem = f"skipping unit {name}: bad unit file at {body.key}: {requirements}"
                report(body.key, body.mod_revision, problem)
                continue
            unit = self._units.get(name)
            if unit is None or (unit.hash, unit.requirements, unit.target_state) != (
                record.hash, requirements, target
            ):
                unit = Unit(name, record.hash, requirements, target)
            out_units[name] = unit

        for kv in bodies.values():
            try:
                self._keys.body_hash(kv.key)
            except BadRecord as exc:
                report(kv.key, kv.mod_revision, f"ignoring {exc}")

        placed: dict[UnitName, ScheduledUnit] = {}
        extra: list[tuple[UnitName, MachineID]] = []
        for kv in schedule.values():
            try:
                machine_id, name = self._keys.parse_scheduled(kv.key)
            except BadRecord as exc:
                report(kv.key, kv.mod_revision, f"ignoring {exc}")
                continue
            if name in skipped:
                continue
            entry = decode(kv, partial(_schedule_entry, machine_id=machine_id))
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

        failures = self._failures(failed or {}, out_units, decode, report)
        counted: dict[UnitName, Rescheduled] = {}
        for kv in (rescheduled or {}).values():
            try:
                name = self._keys.unit_name(kv.key, self._keys.reschedules)
            except BadRecord as exc:
                report(kv.key, kv.mod_revision, f"ignoring {exc}")
                continue
            record = decode(kv, lambda r: records.decode_rescheduled(r.key, r.value))
            if isinstance(record, Rescheduled):
                counted[name] = record
            else:
                report(kv.key, kv.mod_revision, f"ignoring reschedule record: {record}")

        self._decoded, self._units = decoded, out_units
        if len(self._requirements) > 2 * len(out_units) + 64:  # forget destroyed units now and then
            self._requirements = {k: v for k, v in self._requirements.items() if k[1] in out_units}
            self._bodies = {h: v for h, v in self._bodies.items() if h in referenced}
        snapshot = ClusterSnapshot(
            revision, live, out_units, placed, tuple(sorted(extra)), cordoned=frozenset(cordoned),
            failed=failures, rescheduled=counted,
        )
        return Built(snapshot, frozenset(referenced), tuple(problems))

    def _failures(
        self,
        failed: Mapping[str, KeyValue],
        units: Mapping[UnitName, Unit],
        decode: Callable[[KeyValue, Callable[[KeyValue], object]], object],
        report: Callable[[str, int, str], None],
    ) -> dict[UnitName, frozenset[MachineID]]:
        """Where each unit is reported failed at its current hash (markers of older bodies do not count)."""
        out: dict[UnitName, set[MachineID]] = {}
        for kv in failed.values():
            try:
                name, machine_id = self._keys.parse_failed(kv.key)
            except BadRecord as exc:
                report(kv.key, kv.mod_revision, f"ignoring {exc}")
                continue
            unit_hash = decode(kv, lambda f: records.decode_failed(f.key, f.value))
            if isinstance(unit_hash, BadRecord):
                report(kv.key, kv.mod_revision, f"ignoring failure record: {unit_hash}")
            elif name in units and units[name].hash == unit_hash:
                out.setdefault(name, set()).add(machine_id)
        return {name: frozenset(machines) for name, machines in out.items()}

    def _machine(self, kv: KeyValue) -> MachineState:
        self._keys.machine_id(kv.key)
        machine = ks.decode_machine(kv.key, kv.value)
        if kv.key != self._keys.machine(machine.id):
            raise BadRecord(kv.key, f"record names machine {machine.id}")
        return machine

    def _overrides(self, kv: KeyValue) -> dict[str, str]:
        self._keys.metadata_machine(kv.key)
        return ks.decode_metadata(kv.key, kv.value)

    def _cordon(self, kv: KeyValue) -> ks.Cordon:
        self._keys.cordoned_machine(kv.key)
        return ks.decode_cordon(kv.key, kv.value)

    def _requirements_of(self, text: str, unit_hash: str, name: UnitName) -> Requirements | FleetError:
        cached = self._requirements.get((unit_hash, name))
        if cached is None:
            parsed = self._bodies.get(unit_hash)
            if parsed is None:
                try:
                    parsed = self._parse_body(text)
                except FleetError as exc:
                    parsed = exc
                self._bodies[unit_hash] = parsed
            if isinstance(parsed, FleetError):
                cached = parsed
            else:
                try:
                    cached = parsed(name)
                except FleetError as exc:
                    cached = exc
            self._requirements[(unit_hash, name)] = cached
        return cached


def _unit_record(kv: KeyValue, name: UnitName) -> UnitRecord:
    return ks.decode_unit(kv.key, kv.value, name, TargetState.INACTIVE)  # the target is its own key


def _schedule_entry(kv: KeyValue, machine_id: MachineID) -> ScheduledUnit:
    return ks.decode_schedule(kv.key, kv.value, machine_id)
