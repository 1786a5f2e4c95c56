"""The dashboard's view of the cluster (pure): registry keys in, JSON-ready records and small diffs out.

``ClusterView`` holds what the dashboard shows, decoded from the registry's keys one at a time (a listing,
then watch events): machines, cordons, the engine leader, units with their target state, schedule, published
states and unplaceable reasons. ``apply(key, value)`` (``None``: deleted) returns what the key touched, so an
event costs work for one unit and one machine, never a pass over the cluster. ``Broadcast`` remembers what
was last sent for each unit and machine and turns touched names into the changes a browser needs (a unit,
machine or the leader changed, or a unit or machine is gone); a rewrite that changes nothing shown sends
nothing.

Stored values are hostile input: a key that does not parse is ignored and a value that does not decode counts
as absent (the decoders in ``fleetd.registry.keyspace`` are total), so no value stops the dashboard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, Keyspace, Unplaceable
from fleetd.registry.snapshot import ScheduledUnit

__all__ = ["Broadcast", "ClusterView", "Touched"]

Json = dict[str, Any]
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(slots=True)
class Touched:
    """Names whose shown record may have changed (a unit's, a machine's, the leader)."""

    units: set[UnitName] = field(default_factory=set)
    machines: set[MachineID] = field(default_factory=set)
    leader: bool = False

    def add(self, other: Touched) -> None:
        self.units |= other.units
        self.machines |= other.machines
        self.leader = self.leader or other.leader

    def __bool__(self) -> bool:
        return bool(self.units or self.machines or self.leader)


@dataclass(frozen=True, slots=True)
class _Record:
    hash: str
    is_global: bool


class ClusterView:
    """What the dashboard shows, kept up to date key by key under one key prefix."""

    def __init__(self, prefix: str = ks.DEFAULT_PREFIX) -> None:
        self.keys = Keyspace(prefix)
        self.revision = 0
        self.leader = ""
        self.machines: dict[MachineID, MachineState] = {}
        self.cordoned: set[MachineID] = set()
        self._records: dict[UnitName, _Record] = {}
        self._targets: dict[UnitName, TargetState] = {}
        self._schedule: dict[UnitName, dict[MachineID, ScheduledUnit]] = {}
        self._states: dict[UnitName, dict[MachineID, UnitState]] = {}
        self._reasons: dict[UnitName, Unplaceable] = {}
        # machine -> unit -> how many of (schedule entry, published state) the unit has there
        self._on_machine: dict[MachineID, dict[UnitName, int]] = {}

    # Keys in ----------------------------------------------------------------------------------------

    def apply(self, key: str, value: str | None) -> Touched:
        """Apply one key's new value (None: deleted); what it touched (nothing for keys not shown)."""
        keys = self.keys
        try:
            if key == keys.leader:
                self.leader = value or ""
                return Touched(leader=True)
            if key.startswith(keys.units):
                return self._unit(keys.unit_name(key, keys.units), key, value)
            if key.startswith(keys.targets):
                return self._target(keys.unit_name(key, keys.targets), key, value)
            if key.startswith(keys.states):
                name, machine_id = keys.parse_unit_state(key)
                return self._state(name, machine_id, key, value)
            if key.startswith(keys.schedules):
                machine_id, name = keys.parse_scheduled(key)
                return self._scheduled(name, machine_id, key, value)
            if key.startswith(keys.unplaceable):
                return self._reason(keys.unit_name(key, keys.unplaceable), key, value)
            if key.startswith(keys.machines):
                return self._machine(keys.machine_id(key), key, value)
            if key.startswith(keys.cordons):
                machine_id = keys.cordoned_machine(key)
                (self.cordoned.add if value is not None else self.cordoned.discard)(machine_id)
                return Touched(machines={machine_id})
        except BadRecord:
            return Touched()  # a key no record lives at: nothing shown changes
        return Touched()

    def apply_all(self, items: Iterable[tuple[str, str | None]]) -> Touched:
        touched = Touched()
        for key, value in items:
            touched.add(self.apply(key, value))
        return touched

    def _unit(self, name: UnitName, key: str, value: str | None) -> Touched:
        def decode(text: str) -> _Record:
            record = ks.decode_unit(key, text, name, TargetState.INACTIVE)
            return _Record(record.hash, record.is_global)

        _store(self._records, name, value, decode)
        return Touched(units={name})

    def _target(self, name: UnitName, key: str, value: str | None) -> Touched:
        _store(self._targets, name, value, lambda text: ks.decode_target(key, text))
        return Touched(units={name})

    def _reason(self, name: UnitName, key: str, value: str | None) -> Touched:
        _store(self._reasons, name, value, lambda text: ks.decode_unplaceable(key, text))
        return Touched(units={name})

    def _machine(self, machine_id: MachineID, key: str, value: str | None) -> Touched:
        def decode(text: str) -> MachineState | None:
            machine = ks.decode_machine(key, text)
            return machine if machine.id == machine_id else None

        _store(self.machines, machine_id, value, decode)
        return Touched(machines={machine_id})

    def _state(self, name: UnitName, machine_id: MachineID, key: str, value: str | None) -> Touched:
        return self._on(self._states, name, machine_id, value,
                        lambda text: ks.decode_unit_state(key, text, name, machine_id))

    def _scheduled(self, name: UnitName, machine_id: MachineID, key: str, value: str | None) -> Touched:
        return self._on(self._schedule, name, machine_id, value,
                        lambda text: ks.decode_schedule(key, text, machine_id))

    def _on(
        self, store: dict[UnitName, dict[MachineID, _V]], name: UnitName, machine_id: MachineID,
        value: str | None, decode: Callable[[str], _V],
    ) -> Touched:
        """A per-machine record of a unit (its state, its schedule entry) changed; the machine's unit count
        follows when the record came or went."""
        entries = store.setdefault(name, {})
        had = _store(entries, machine_id, value, decode)
        has = machine_id in entries
        if not entries:
            del store[name]
        counts = self._on_machine.setdefault(machine_id, {})
        left = counts.get(name, 0) + int(has) - int(had)
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)
        return Touched(units={name}, machines={machine_id} if has != had else set())

    # JSON out ---------------------------------------------------------------------------------------

    def unit_names(self) -> list[UnitName]:
        return sorted(self._records)

    def unit_hash(self, name: str) -> str | None:
        record = self._records.get(UnitName(name))
        return record.hash if record is not None else None

    def unit_json(self, name: UnitName) -> Json | None:
        """A unit's row (None: no such unit): desired and current state, machine, systemd's state there,
        the reason it cannot be placed; for a global unit, on how many machines it is and is active."""
        record = self._records.get(name)
        if record is None:
            return None
        states = self._states.get(name, {})
        out: Json = {
            "name": name,
            "desired": self._targets.get(name, TargetState.INACTIVE).value,
            "global": record.is_global,
        }
        if record.is_global:
            out["machines"] = len(states)
            out["activeOn"] = sum(1 for state in states.values() if state.active_state == "active")
            return out
        scheduled = self._schedule.get(name, {})
        machine = min(scheduled) if scheduled else None
        current = TargetState.INACTIVE
        for state in states.values():
            if state.state.rank > current.rank:
                current = state.state
        out["current"] = current.value
        out["machine"] = machine
        shown = states.get(machine) if machine is not None else None
        if shown is None and states:
            shown = states[min(states)]
        if shown is not None:
            out["load"], out["active"], out["sub"] = shown.load_state, shown.active_state, shown.sub_state
        why = self._reasons.get(name)
        if machine is None and why is not None and why.hash == record.hash:
            out["reason"] = why.reason
        return out

    def machine_json(self, machine_id: MachineID) -> Json | None:
        machine = self.machines.get(machine_id)
        if machine is None:
            return None
        out: Json = {
            "id": machine.id,
            "ip": machine.public_ip,
            "metadata": dict(sorted(machine.metadata.items())),
            "units": len(self._on_machine.get(machine_id, ())),
        }
        if machine.max_units:
            out["maxUnits"] = machine.max_units
        if machine_id in self.cordoned:
            out["cordoned"] = True
        return out

    def unit_states_json(self, name: str) -> list[Json]:
        """The unit's published state on each machine, by machine ID (for the unit page)."""
        states = self._states.get(UnitName(name), {})
        scheduled = self._schedule.get(UnitName(name), {})
        rows = []
        for machine_id in sorted(set(states) | set(scheduled)):
            state = states.get(machine_id)
            entry = scheduled.get(machine_id)
            row: Json = {"machine": machine_id, "scheduled": entry.state.value if entry else None}
            if state is not None:
                row.update(
                    load=state.load_state, active=state.active_state, sub=state.sub_state,
                    state=state.state.value, hash=state.hash,
                )
            rows.append(row)
        return rows

    def snapshot_json(self) -> Json:
        """Everything shown, sorted: the first message a browser gets."""
        units = [self.unit_json(name) for name in self.unit_names()]
        machines = [self.machine_json(machine_id) for machine_id in sorted(self.machines)]
        return {
            "revision": self.revision,
            "leader": self.leader,
            "machines": [m for m in machines if m is not None],
            "units": [u for u in units if u is not None],
        }


def _store(store: dict[_K, _V], name: _K, value: str | None, decode: Callable[[str], _V | None]) -> bool:
    """Replace ``store[name]`` with the decoded ``value`` (left absent when deleted or when it does not
    decode); whether it was there before."""
    had = store.pop(name, None) is not None
    if value is not None:
        with contextlib.suppress(BadRecord):
            decoded = decode(value)
            if decoded is not None:
                store[name] = decoded
    return had


class Broadcast:
    """What was last sent of each unit and machine, and the changes that bring a browser up to date."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self._units: dict[UnitName, Json] = {}
        self._machines: dict[MachineID, Json] = {}
        self._leader = view.leader
        for name in view.unit_names():
            shown = view.unit_json(name)
            if shown is not None:
                self._units[name] = shown
        for machine_id in view.machines:
            machine = view.machine_json(machine_id)
            if machine is not None:
                self._machines[machine_id] = machine

    def changes(self, touched: Touched) -> list[Json]:
        """The changes to send for ``touched`` (empty when nothing shown changed), in a stable order."""
        out: list[Json] = []
        for machine_id in sorted(touched.machines):
            shown = self.view.machine_json(machine_id)
            _diff(out, self._machines, machine_id, shown, kind="machine", field="id")
        for name in sorted(touched.units):
            _diff(out, self._units, name, self.view.unit_json(name), kind="unit", field="name")
        if touched.leader and self.view.leader != self._leader:
            self._leader = self.view.leader
            out.append({"op": "leader", "id": self.view.leader})
        return out


def _diff(
    out: list[Json], sent: dict[Any, Json], key: str, new: Json | None, *, kind: str, field: str
) -> None:
    old = sent.get(key)
    if new is None:
        if old is not None:
            del sent[key]
            out.append({"op": f"{kind}-removed", field: key})
    elif new != old:
        sent[key] = new
        out.append({"op": kind, kind: new})

