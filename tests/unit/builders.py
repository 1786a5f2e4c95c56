"""Small builders for planner tests: machines, units, snapshots, and applying a plan to a snapshot."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping

from fleetd.engine.plan import EnginePlan, Schedule
from fleetd.model import MachineID, MachineState, Requirements, TargetState, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit

LAUNCHED = TargetState.LAUNCHED
LOADED = TargetState.LOADED
INACTIVE = TargetState.INACTIVE


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def machine(machine_id: str, **metadata: str) -> MachineState:
    return MachineState(MachineID(machine_id), metadata=dict(metadata))


def capped(machine_id: str, max_units: int, **metadata: str) -> MachineState:
    """A machine with a unit cap."""
    return MachineState(MachineID(machine_id), metadata=dict(metadata), max_units=max_units)


def unit(
    name: str,
    state: TargetState = LAUNCHED,
    *,
    body: str = "",
    machine_id: str | None = None,
    peers: Iterable[str] = (),
    conflicts: Iterable[str] = (),
    metadata: Mapping[str, Iterable[str]] | None = None,
    is_global: bool = False,
    replaces: Iterable[str] = (),
) -> Unit:
    """A unit whose hash derives from its name and ``body`` (change ``body`` to change the hash)."""
    requirements = Requirements(
        machine_id=machine_id,
        peers=tuple(peers),
        conflicts=tuple(conflicts),
        metadata={key: frozenset(values) for key, values in (metadata or {}).items()},
        is_global=is_global,
        replaces=tuple(replaces),
    )
    return Unit(UnitName(name), digest(name + body), requirements, state)


def snapshot(
    machines: Iterable[MachineState],
    units: Iterable[Unit],
    schedule: Mapping[str, str] | None = None,
    *,
    entries: Mapping[str, ScheduledUnit] | None = None,
    extra: Iterable[tuple[str, str]] = (),
    revision: int = 7,
) -> ClusterSnapshot:
    """A snapshot; ``schedule`` maps unit -> machine with entries matching the unit (hash and state)."""
    by_name = {u.name: u for u in units}
    table: dict[UnitName, ScheduledUnit] = {}
    for name, machine_id in (schedule or {}).items():
        known = by_name.get(UnitName(name))
        state = known.target_state if known and known.target_state is not INACTIVE else LAUNCHED
        content_hash = known.hash if known else digest(name)
        table[UnitName(name)] = ScheduledUnit(MachineID(machine_id), content_hash, state)
    for name, entry in (entries or {}).items():
        table[UnitName(name)] = entry
    return ClusterSnapshot(
        revision=revision,
        machines={m.id: m for m in machines},
        units=by_name,
        schedule=table,
        extra_schedule=tuple((UnitName(n), MachineID(m)) for n, m in extra),
    )


def apply(before: ClusterSnapshot, plan: EnginePlan) -> ClusterSnapshot:
    """The snapshot after writing ``plan``'s actions, as the engine shell would."""
    keys: dict[tuple[UnitName, MachineID], ScheduledUnit] = {
        (name, entry.machine_id): entry for name, entry in before.schedule.items()
    }
    for name, machine_id in before.extra_schedule:
        keys[(name, machine_id)] = ScheduledUnit(machine_id, "", LAUNCHED)
    for action in plan.actions:
        key = (action.unit, action.machine_id)
        if isinstance(action, Schedule):
            keys[key] = ScheduledUnit(action.machine_id, action.hash, action.state)
        else:
            assert key in keys, f"unschedule of a missing entry {key}"
            del keys[key]
    table: dict[UnitName, ScheduledUnit] = {}
    extra: list[tuple[UnitName, MachineID]] = []
    for (name, machine_id), entry in sorted(keys.items()):
        if name in table:
            extra.append((name, machine_id))
        else:
            table[name] = entry
    return dataclasses.replace(
        before, revision=before.revision + 1, schedule=table, extra_schedule=tuple(extra)
    )


def placement(snap: ClusterSnapshot) -> dict[str, str]:
    """unit -> machine, from a snapshot's schedule."""
    return {name: entry.machine_id for name, entry in snap.schedule.items()}
