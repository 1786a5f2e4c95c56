"""What fleetctl and the HTTP API share about units: a new unit's record, and a unit's current state.

Both front ends create units and show their state through these functions on the one Registry, so a unit
created with ``fleetctl submit`` and one created with ``PUT /fleet/v1/units/<name>`` are stored alike and
read back alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleetd.model import TargetState, UnitName, UnitState
from fleetd.registry.keyspace import UnitRecord
from fleetd.unitfile.body import body_requirements
from fleetd.unitfile.unit import UnitFile

__all__ = ["current_state", "is_global", "new_record"]


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
