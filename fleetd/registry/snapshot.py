"""The cluster snapshot: an immutable view of units, machines and the schedule, the engine planner's input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetd.model import MachineID, MachineState, Rescheduled, TargetState, Unit, UnitName

__all__ = ["ClusterSnapshot", "Rescheduled", "ScheduledUnit"]


@dataclass(frozen=True, slots=True)
class ScheduledUnit:
    """One entry of a machine's schedule: that machine must run this unit, at this hash, in this state."""

    machine_id: MachineID
    hash: str
    state: TargetState  # LOADED or LAUNCHED


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything the engine plans from, read at one etcd revision.

    ``machines`` holds live machines only. ``units`` holds every unit (global ones included) with its
    requirements and target state. ``schedule`` holds the current placement of non-global units: at most one
    entry per unit (the keyspace allows more after a crash between writes; the snapshot builder keeps the
    lowest machine ID and the planner unschedules the rest via ``extra_schedule``).
    """

    revision: int
    machines: Mapping[MachineID, MachineState]
    units: Mapping[UnitName, Unit]
    schedule: Mapping[UnitName, ScheduledUnit]
    extra_schedule: tuple[tuple[UnitName, MachineID], ...] = ()
    # Absent machines still in their grace (an etcd outage is not a machine failure): their units stay
    # scheduled to them, untouched, and nothing new goes there.
    held_machines: frozenset[MachineID] = frozenset()
    # Cordoned machines (``fleetctl drain``): nothing new is placed there and their movable units move away.
    cordoned: frozenset[MachineID] = frozenset()
    # Machines where systemd reports a unit failed at its current hash (``failed/<unit>/<machine>``, kept by
    # the agents), the reschedule records of units with Reschedule=on-failure, and the wall clock (seconds)
    # that reschedule backoffs are measured with.
    failed: Mapping[UnitName, frozenset[MachineID]] = field(default_factory=dict)
    rescheduled: Mapping[UnitName, Rescheduled] = field(default_factory=dict)
    now: float = 0.0
