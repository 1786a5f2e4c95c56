"""The agent planner (pure): what this machine should run vs what it runs, to ordered systemd tasks."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.engine.placement import LocalView, can_run
from fleetd.model import MachineState, TargetState, Unit, UnitName

__all__ = [
    "ALWAYS_RELOAD",
    "HASH_DIFFERS",
    "LAUNCHED_BUT_LOADED",
    "LOADED_BUT_LAUNCHED",
    "LOADED_NOT_SCHEDULED",
    "SCHEDULED_NOT_LOADED",
    "CurrentUnit",
    "DesiredUnit",
    "Task",
    "TaskKind",
    "desired_units",
    "plan_tasks",
]

LOADED_NOT_SCHEDULED = "unit loaded but not scheduled here"
SCHEDULED_NOT_LOADED = "unit scheduled here but not loaded"
HASH_DIFFERS = "unit loaded but hash differs to expected"
LOADED_BUT_LAUNCHED = "unit currently loaded but desired state is launched"
LAUNCHED_BUT_LOADED = "unit currently launched but desired state is loaded"
ALWAYS_RELOAD = "always reload unit files"


@dataclass(frozen=True, slots=True)
class DesiredUnit:
    """A unit this machine should have, at this hash, in this state."""

    name: UnitName
    hash: str
    state: TargetState


@dataclass(frozen=True, slots=True)
class CurrentUnit:
    """A unit present in the units directory: its hash and the fleet state applied to it.

    ``INACTIVE`` means present but not known to be loaded (e.g. a file left by a previous fleetd).
    """

    name: UnitName
    hash: str
    state: TargetState


class TaskKind(enum.IntEnum):
    """Task kinds in execution order."""

    UNLOAD = 1
    LOAD = 2
    RELOAD = 3  # one systemd daemon-reload per batch
    STOP = 4
    START = 5


@dataclass(frozen=True, slots=True)
class Task:
    kind: TaskKind
    unit: UnitName | None  # None for RELOAD
    reason: str


def desired_units(
    machine: MachineState,
    scheduled: Mapping[UnitName, Unit],
    global_units: Mapping[UnitName, Unit],
) -> Mapping[UnitName, DesiredUnit]:
    """The units this machine should run, in name order.

    ``scheduled`` holds the units of this machine's schedule entries, each carrying the entry's hash and
    state. Global units follow, in name order: each is included when ``can_run`` accepts it beside the
    units already included (its metadata matches, no conflict). Inactive units are left out.
    """
    included: dict[UnitName, Unit] = {
        name: unit
        for name, unit in sorted(scheduled.items())
        if unit.target_state is not TargetState.INACTIVE
    }
    view = LocalView(machine, included)
    for name in sorted(global_units):
        unit = global_units[name]
        if name in included or unit.target_state is TargetState.INACTIVE:
            continue
        if can_run(view, unit).ok:
            included[name] = unit
    return {
        name: DesiredUnit(name, unit.hash, unit.target_state) for name, unit in sorted(included.items())
    }


def _unit_tasks(desired: DesiredUnit | None, current: CurrentUnit | None, name: UnitName) -> list[Task]:
    if desired is None or desired.state is TargetState.INACTIVE:
        return [Task(TaskKind.UNLOAD, name, LOADED_NOT_SCHEDULED)] if current is not None else []
    tasks: list[Task] = []
    current_state = current.state if current is not None else None
    if current is not None and current.hash != desired.hash:
        tasks.append(Task(TaskKind.UNLOAD, name, HASH_DIFFERS))
        current_state = None
    if current_state in (None, TargetState.INACTIVE):
        tasks.append(Task(TaskKind.LOAD, name, SCHEDULED_NOT_LOADED))
    if desired.state is TargetState.LAUNCHED and current_state is not TargetState.LAUNCHED:
        tasks.append(Task(TaskKind.START, name, LOADED_BUT_LAUNCHED))
    elif desired.state is TargetState.LOADED and current_state is TargetState.LAUNCHED:
        tasks.append(Task(TaskKind.STOP, name, LAUNCHED_BUT_LOADED))
    return tasks


def plan_tasks(
    desired: Mapping[UnitName, DesiredUnit], current: Mapping[UnitName, CurrentUnit]
) -> tuple[Task, ...]:
    """Ordered tasks taking ``current`` to ``desired``: unload, load, reload, stop, start.

    Units are visited in name order; a hash change is unload + load (+ start). One RELOAD joins any
    batch that loads or unloads something.
    """
    tasks: list[Task] = []
    for name in sorted(desired.keys() | current.keys()):
        tasks.extend(_unit_tasks(desired.get(name), current.get(name), name))
    if any(task.kind in (TaskKind.UNLOAD, TaskKind.LOAD) for task in tasks):
        tasks.append(Task(TaskKind.RELOAD, None, ALWAYS_RELOAD))
    tasks.sort(key=lambda task: task.kind)  # stable: name order within a kind
    return tuple(tasks)
