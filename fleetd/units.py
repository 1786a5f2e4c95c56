"""What fleetctl and the HTTP API share about units: a new unit's record, and a unit's current state.

Both front ends create units and show their state through these functions on the one Registry, so a unit
created with ``fleetctl submit`` and one created with ``PUT /fleet/v1/units/<name>`` are stored alike and
read back alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleetd.model import MachineID, TargetState, UnitName, UnitState
from fleetd.registry.keyspace import UnitRecord
from fleetd.registry.reasons import Reasons, Reschedules
from fleetd.registry.registry import Registry
from fleetd.unitfile.body import body_requirements
from fleetd.unitfile.unit import UnitFile

__all__ = [
    "UnitView", "current_state", "is_global", "new_record", "states_by_name", "unit_view", "unit_views",
]


def is_global(unit_file: UnitFile, name: str) -> bool:
    """Whether ``unit_file`` submitted as ``name`` is global, read from its canonical text as the engine and
    the agents read it (UnitFileError for a unit file that is not usable)."""
    return body_requirements(unit_file.canonical)(UnitName(name)).is_global


def new_record(
    name: str, unit_file: UnitFile, target: TargetState = TargetState.INACTIVE
) -> tuple[UnitRecord, str]:
    """The record and body that create (or replace) ``name`` in target state ``target``."""
    record = UnitRecord(UnitName(name), unit_file.hash, is_global(unit_file, name), target)
    return record, unit_file.canonical


def current_state(states: Iterable[UnitState]) -> TargetState:
    """A non-global unit's current state from its published records: the furthest one, inactive if none."""
    best = TargetState.INACTIVE
    for state in states:
        if state.state.rank > best.rank:
            best = state.state
    return best


def states_by_name(states: Iterable[UnitState]) -> dict[str, list[UnitState]]:
    grouped: dict[str, list[UnitState]] = {}
    for state in states:
        grouped.setdefault(state.name, []).append(state)
    return grouped


@dataclass(frozen=True, slots=True)
class UnitView:
    """A unit with its current state and where the engine placed it."""

    record: UnitRecord
    current: TargetState | None  # None for global units (they have no single current state)
    machine_id: MachineID | None  # where it is scheduled (lowest ID); None when unplaced or global
    reason: str = ""  # why no machine can run it (unplaced units), or what the engine did after it failed


async def unit_views(registry: Registry) -> list[UnitView]:
    """Every unit sorted by name with its current state, target machine and unplaceable or reschedule
    reason (a few whole-keyspace ranges: units, schedule, states, reasons, reschedules)."""
    records = await registry.list_units()
    schedule = await registry.list_schedule()
    states = states_by_name(await registry.list_unit_states())
    reasons = await Reasons(registry).read()
    rescheduled = await Reschedules(registry).read()
    views = []
    for record in records:
        entries = schedule.get(record.name, [])
        machine_id = None
        if entries and not record.is_global:
            machine_id = min(entry.machine_id for entry in entries)
        current = None if record.is_global else current_state(states.get(record.name, ()))
        why = reasons.get(record.name)
        reason = why.reason if why is not None and why.hash == record.hash and machine_id is None else ""
        moved = rescheduled.get(record.name)
        if not reason and moved is not None and moved.hash == record.hash:
            reason = moved.reason
        views.append(UnitView(record, current, machine_id, reason))
    return sorted(views, key=lambda view: view.record.name)


async def unit_view(registry: Registry, name: str) -> UnitView | None:
    """One unit's view as ``unit_views`` computes it, without reading every unit: its record and target (one
    Txn), its states (one range of ``states/<name>/``) and its schedule entries on live machines (the
    machine IDs, then one packed Txn of Gets). None when the unit does not exist."""
    record = await registry.get_unit(name)
    if record is None:
        return None
    if record.is_global:
        return UnitView(record, None, None)
    current = current_state(await registry.list_unit_states([name]))
    machines = await registry.machine_ids()
    keys = registry.keys
    found = await registry.get_many([keys.scheduled(machine_id, name) for machine_id in machines])
    placed = [m for m in machines if keys.scheduled(m, name) in found]
    machine_id = min(placed, default=None)
    reason = ""
    if machine_id is None:
        why = (await Reasons(registry).read([name])).get(UnitName(name))
        reason = why.reason if why is not None and why.hash == record.hash else ""
    return UnitView(record, current, machine_id, reason)
