"""The agent planner (pure): what this machine should run vs what it runs, to ordered systemd tasks.

``plan_tasks`` turns desired vs current units into tasks. ``plan_pass`` is what the agent shell calls each
pass: it adds every decision that depends on what the shell knows about its lease and its last batch
(``Facts``), and returns an ``AgentPlan``:

- **holding unloads**: units that left this machine's schedule are not unloaded while the schedule settles
  after a new registration (the engine re-schedules a returning machine's units within a pass) nor while
  the lease is lost (the view of the schedule is stale); an unload is only planned once the lease was
  confirmed live this pass (``confirm_lease`` asks the shell to check it and plan again);
- **the owed reload**: a batch that loaded or unloaded units and stopped before its reload owes one;
- **fencing**: once the lease is known lost (a keep-alive was answered "expired", or none succeeded for
  a TTL), the units the fence policy covers (by default those with ``Conflicts``) are stopped and kept
  stopped until the machine is registered again and its schedule settled, so a partitioned machine and
  the machine its units were re-placed on do not run them together for longer than about a TTL.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.engine.placement import LocalView, can_run
from fleetd.model import MachineState, TargetState, Unit, UnitName

__all__ = [
    "ALWAYS_RELOAD",
    "FENCED",
    "HASH_DIFFERS",
    "LAUNCHED_BUT_LOADED",
    "LOADED_BUT_LAUNCHED",
    "LOADED_NOT_SCHEDULED",
    "RELOAD_OWED",
    "SCHEDULED_NOT_LOADED",
    "AgentPlan",
    "CurrentUnit",
    "DesiredUnit",
    "Facts",
    "FencePolicy",
    "Task",
    "TaskKind",
    "desired_units",
    "plan_pass",
    "plan_tasks",
]

LOADED_NOT_SCHEDULED = "unit loaded but not scheduled here"
SCHEDULED_NOT_LOADED = "unit scheduled here but not loaded"
HASH_DIFFERS = "unit loaded but hash differs to expected"
LOADED_BUT_LAUNCHED = "unit currently loaded but desired state is launched"
LAUNCHED_BUT_LOADED = "unit currently launched but desired state is loaded"
ALWAYS_RELOAD = "always reload unit files"
RELOAD_OWED = "units were loaded or unloaded by an interrupted batch"
FENCED = "machine lease lost while etcd is unreachable: fencing the unit"


class FencePolicy(enum.Enum):
    """Which units an agent stops when it knows its lease is lost (config key ``fence_units``)."""

    CONFLICTS = "conflicts"  # units with Conflicts= (the default): they must not run twice
    ALL = "all"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class DesiredUnit:
    """A unit this machine should have, at this hash, in this state (``conflicts``: it has Conflicts=)."""

    name: UnitName
    hash: str
    state: TargetState
    conflicts: bool = False


@dataclass(frozen=True, slots=True)
class CurrentUnit:
    """A unit present in the units directory: its hash and the fleet state applied to it.

    ``INACTIVE`` means present but not known to be loaded (e.g. a file left by a previous fleetd).
    ``conflicts`` is the flag of the DesiredUnit it was loaded as (False when unknown).
    """

    name: UnitName
    hash: str
    state: TargetState
    conflicts: bool = False


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


@dataclass(frozen=True, slots=True)
class Facts:
    """What the agent shell knows this pass, beyond desired and current units. Times are the shell's
    monotonic clock, in seconds."""

    now: float
    lease_deadline: float = math.inf  # the lease has surely lapsed by then unless a keep-alive succeeds
    lease_expired: bool = False  # etcd answered a keep-alive with "expired" and no new lease is held yet
    reachable: bool = True  # the last keep-alive reached etcd
    lease_confirmed: bool = False  # the shell read its lease live during this pass
    settle_until: float = 0.0  # a new registration's schedule settles until then
    reload_owed: bool = False  # a batch loaded or unloaded units and stopped before its reload
    fenced: frozenset[UnitName] = frozenset()  # units stopped by fencing and not released yet
    fence: FencePolicy = FencePolicy.CONFLICTS
    skipped: frozenset[UnitName] = frozenset()  # desired units whose body is unusable: leave them as they are

    @property
    def lease_lost(self) -> bool:
        return self.lease_expired or self.now >= self.lease_deadline

    @property
    def settling(self) -> bool:
        return self.now < self.settle_until


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """One pass's decisions. Feed ``fenced`` back in the next pass's Facts; pass again by ``wake_at``."""

    tasks: tuple[Task, ...]
    fenced: frozenset[UnitName] = frozenset()
    held: frozenset[UnitName] = frozenset()  # unloads held (schedule settling or lease lost)
    wake_at: float = math.inf
    confirm_lease: bool = False  # confirm the lease live, then plan again with ``lease_confirmed``


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
        name: DesiredUnit(name, unit.hash, unit.target_state, bool(unit.requirements.conflicts))
        for name, unit in sorted(included.items())
    }


def _unit_tasks(
    desired: DesiredUnit | None, current: CurrentUnit | None, name: UnitName, fenced: bool = False
) -> list[Task]:
    """Tasks for one unit; a ``fenced`` unit runs at most loaded (stopped with reason FENCED)."""
    if desired is None or desired.state is TargetState.INACTIVE:
        if current is None:
            return []
        if fenced and current.state is TargetState.LAUNCHED:  # a fence holds the unload: stop it now
            return [Task(TaskKind.UNLOAD, name, LOADED_NOT_SCHEDULED), Task(TaskKind.STOP, name, FENCED)]
        return [Task(TaskKind.UNLOAD, name, LOADED_NOT_SCHEDULED)]
    tasks: list[Task] = []
    current_state = current.state if current is not None else None
    if current is not None and current.hash != desired.hash:
        tasks.append(Task(TaskKind.UNLOAD, name, HASH_DIFFERS))
        current_state = None
    if current_state in (None, TargetState.INACTIVE):
        tasks.append(Task(TaskKind.LOAD, name, SCHEDULED_NOT_LOADED))
    launched = desired.state is TargetState.LAUNCHED and not fenced
    if launched and current_state is not TargetState.LAUNCHED:
        tasks.append(Task(TaskKind.START, name, LOADED_BUT_LAUNCHED))
    elif not launched and current_state is TargetState.LAUNCHED:
        tasks.append(Task(TaskKind.STOP, name, FENCED if fenced else LAUNCHED_BUT_LOADED))
    return tasks


def _ordered(tasks: list[Task], reload_owed: bool = False) -> tuple[Task, ...]:
    """Tasks by kind (stable: name order within a kind), with one RELOAD when anything is loaded or
    unloaded, or when a reload is owed."""
    tasks = [task for task in tasks if task.kind is not TaskKind.RELOAD]
    if any(task.kind in (TaskKind.UNLOAD, TaskKind.LOAD) for task in tasks):
        tasks.append(Task(TaskKind.RELOAD, None, ALWAYS_RELOAD))
    elif reload_owed:
        tasks.append(Task(TaskKind.RELOAD, None, RELOAD_OWED))
    tasks.sort(key=lambda task: task.kind)
    return tuple(tasks)


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
    return _ordered(tasks)


def _covered(policy: FencePolicy, desired: DesiredUnit | None, current: CurrentUnit | None) -> bool:
    """Whether the fence policy covers a unit (its Conflicts= as desired, else as it was loaded)."""
    if policy is FencePolicy.NONE:
        return False
    if policy is FencePolicy.ALL:
        return True
    return desired.conflicts if desired is not None else current is not None and current.conflicts


def plan_pass(
    desired: Mapping[UnitName, DesiredUnit], current: Mapping[UnitName, CurrentUnit], facts: Facts
) -> AgentPlan:
    """One pass of the agent: ``plan_tasks`` plus holding, the owed reload and fencing (module doc)."""
    current = {name: unit for name, unit in current.items() if name not in facts.skipped}
    lost = facts.lease_lost
    fenced: set[UnitName] = set()
    tasks: list[Task] = []
    for name in sorted(desired.keys() | current.keys()):
        want, have = desired.get(name), current.get(name)
        if name in facts.fenced and have is not None:
            fence = lost or facts.settling  # released once registered again and settled
        else:  # under a lost lease the view of the schedule is stale: start no covered unit either
            fence = lost and _covered(facts.fence, want, have)
        if fence and have is not None:
            fenced.add(name)
        tasks.extend(_unit_tasks(want, have, name, fence))
    leaving = frozenset(
        name for name in current if (want := desired.get(name)) is None or want.state is TargetState.INACTIVE
    )
    held: frozenset[UnitName] = frozenset()
    wake_at = math.inf
    if leaving and (lost or facts.settling):
        held = leaving
        tasks = [task for task in tasks if not (task.kind is TaskKind.UNLOAD and task.unit in held)]
        if facts.settling:
            wake_at = facts.settle_until
    elif leaving and not facts.lease_confirmed:
        return AgentPlan((), frozenset(fenced), confirm_lease=True)
    if fenced and facts.settling and not lost:
        wake_at = min(wake_at, facts.settle_until)  # release the fence once the schedule has settled
    if not lost and not facts.reachable and any(
        unit.state is TargetState.LAUNCHED and _covered(facts.fence, desired.get(name), unit)
        for name, unit in current.items()
    ):
        wake_at = min(wake_at, facts.lease_deadline)  # fence as soon as the lease is surely gone
    return AgentPlan(_ordered(tasks, facts.reload_owed), frozenset(fenced), held, wake_at)
