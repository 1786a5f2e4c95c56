"""How the snapshot builder decodes each prefix it reads: one record type per prefix, and the decoders a
leader's Mirror applies as keys arrive (each raising BadRecord for a key that names nothing)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from fleetd.model import MachineID, MachineState, Rescheduled, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Keyspace, UnitRecord
from fleetd.registry.kv import KeyValue
from fleetd.registry.mirror import Decoder
from fleetd.registry.snapshot import ScheduledUnit

__all__ = ["Count", "Decoders", "Failure", "Named", "Pinned", "Placed", "mirror_decoders"]


@dataclass(frozen=True, slots=True)
class Named:
    """A ``units/`` key: the valid unit name it carries, and its record (or why it is bad)."""

    name: UnitName
    record: UnitRecord | BadRecord


@dataclass(frozen=True, slots=True)
class Placed:
    """A ``schedule/`` key: the machine and unit it names, and its entry (or why it is bad)."""

    machine_id: MachineID
    name: UnitName
    entry: ScheduledUnit | BadRecord


@dataclass(frozen=True, slots=True)
class Pinned:
    """A ``schedule/<machine>/pin/<unit>`` key: a Global unit's hash pin there (or why its value is bad).
    Pins are fleetctl's (a rolling update of a Global unit): never an entry to place or remove."""

    machine_id: MachineID
    name: UnitName
    hash: str | BadRecord


@dataclass(frozen=True, slots=True)
class Failure:
    """A ``failed/`` key: the unit and machine it names, and the hash that failed (or why it is bad)."""

    name: UnitName
    machine_id: MachineID
    hash: str | BadRecord


@dataclass(frozen=True, slots=True)
class Count:
    """A ``reschedules/`` key: the unit it names, and its record (or why it is bad)."""

    name: UnitName
    record: Rescheduled | BadRecord


class Decoders:
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

    def unit(self, kv: KeyValue) -> Named:
        name = self._keys.unit_name(kv.key, self._keys.units)
        try:
            record: UnitRecord | BadRecord = ks.decode_unit(kv.key, kv.value, name, TargetState.INACTIVE)
        except BadRecord as exc:  # the target is its own key
            record = exc
        if isinstance(record, UnitRecord):  # one copy of a hash for the record, schedule entry and unit
            record = UnitRecord(name, sys.intern(record.hash), record.is_global, record.target_state)
        return Named(name, record)

    def target(self, kv: KeyValue) -> TargetState:
        return ks.decode_target(kv.key, kv.value)

    def scheduled(self, kv: KeyValue) -> Placed | Pinned:
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
        return Placed(machine_id, name, entry)

    def pinned(self, kv: KeyValue) -> Pinned:
        machine_id, name = self._keys.parse_pin(kv.key)
        try:
            unit_hash: str | BadRecord = sys.intern(ks.decode_pin(kv.key, kv.value))
        except BadRecord as exc:
            unit_hash = exc
        return Pinned(machine_id, name, unit_hash)

    def failure(self, kv: KeyValue) -> Failure:
        name, machine_id = self._keys.parse_failed(kv.key)
        try:
            unit_hash: str | BadRecord = records.decode_failed(kv.key, kv.value)
        except BadRecord as exc:
            unit_hash = exc
        return Failure(name, machine_id, unit_hash)

    def rescheduled(self, kv: KeyValue) -> Count:
        name = self._keys.unit_name(kv.key, self._keys.reschedules)
        try:
            record: Rescheduled | BadRecord = records.decode_rescheduled(kv.key, kv.value)
        except BadRecord as exc:
            record = exc
        return Count(name, record)


def mirror_decoders(keys: Keyspace) -> dict[str, Decoder]:
    """The decoders for a leader's Mirror: every prefix the builder reads but ``bodies/`` (whose text is
    parsed here once per hash)."""
    d = Decoders(keys)
    return {
        keys.machines: d.machine, keys.metadata: d.overrides, keys.cordons: d.cordon, keys.units: d.unit,
        keys.targets: d.target, keys.schedules: d.scheduled, keys.failed: d.failure,
        keys.reschedules: d.rescheduled,
    }
