"""The engine planner (pure): cluster snapshot in, ordered schedule/unschedule actions out."""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.model import MachineID, TargetState, UnitName

__all__ = ["EnginePlan", "Schedule", "Unschedule"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Write ``schedule/<machine>/<unit>`` = (hash, state): place the unit there, or update its entry."""

    unit: UnitName
    machine_id: MachineID
    hash: str
    state: TargetState  # LOADED or LAUNCHED
    reason: str


@dataclass(frozen=True, slots=True)
class Unschedule:
    """Delete ``schedule/<machine>/<unit>``."""

    unit: UnitName
    machine_id: MachineID
    reason: str


Action = Schedule | Unschedule


@dataclass(frozen=True, slots=True)
class EnginePlan:
    revision: int  # the snapshot revision the plan was built from
    actions: tuple[Action, ...]
