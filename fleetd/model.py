"""Frozen value types shared by every part of fleet (pure: stdlib only)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

__all__ = [
    "VERSION",
    "Action",
    "EnginePlan",
    "MachineID",
    "MachineState",
    "Requirements",
    "Rescheduled",
    "Schedule",
    "TargetState",
    "Unit",
    "UnitName",
    "UnitState",
    "Unschedule",
]

VERSION = "0.1.0"

UnitName = NewType("UnitName", str)
MachineID = NewType("MachineID", str)

SHORT_ID_LENGTH = 8
MAX_UNITS_LIMIT = 10**9  # the largest unit cap (MachineState.max_units; 0 is no cap)


class TargetState(enum.Enum):
    """What the user wants for a unit: known, loaded into systemd, or running."""

    INACTIVE = "inactive"
    LOADED = "loaded"
    LAUNCHED = "launched"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> TargetState:
        """Parse a stored or typed state name; raises ValueError naming the bad value."""
        try:
            return cls(text)
        except ValueError:
            expected = "expected inactive, loaded or launched"
            raise ValueError(f"invalid target state {text!r} ({expected})") from None


_RANK = {TargetState.INACTIVE: 0, TargetState.LOADED: 1, TargetState.LAUNCHED: 2}


def _empty_metadata() -> Mapping[str, frozenset[str]]:
    return {}


@dataclass(frozen=True, slots=True)
class Requirements:
    """A unit's [X-Fleet] requirements, with specifiers (%n %N %p %i) already expanded for its name.

    ``metadata`` maps a key to the set of allowed values: values of one key are OR-ed, keys are AND-ed.
    ``conflicts`` and ``replaces`` are glob patterns (Go path.Match syntax, see fleetd.glob); ``peers``
    (MachineOf) are exact unit names; ``machine_id`` matches a full or 8-character short machine ID.
    """

    machine_id: str | None = None
    peers: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    metadata: Mapping[str, frozenset[str]] = field(default_factory=_empty_metadata)
    is_global: bool = False
    replaces: tuple[str, ...] = ()
    # Reschedule=on-failure: a unit systemd reports failed is moved to another machine, at most
    # ``reschedule_attempts`` times per body, ``reschedule_backoff`` seconds apart (fleetd.engine.plan).
    reschedule: bool = False
    reschedule_attempts: int = 3
    reschedule_backoff: float = 10.0


NO_REQUIREMENTS = Requirements()


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit as the cluster knows it: name, content hash, requirements and target state."""

    name: UnitName
    hash: str  # 40 lowercase hex chars: SHA-1 of the canonical unit text
    requirements: Requirements
    target_state: TargetState

    @property
    def is_global(self) -> bool:
        return self.requirements.is_global


@dataclass(frozen=True, slots=True)
class MachineState:
    """A live machine: its ID, public IP ('' when unknown), metadata, fleet version and unit cap.

    ``max_units`` is the most units the engine places there (Global units count toward it but are never
    refused by it); 0 means no cap. fleetd publishes the smaller of its ``max_units`` configuration key and
    its ``fleet.max-units`` metadata value.
    """

    id: MachineID
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    version: str = VERSION
    max_units: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    def matches_id(self, wanted: str) -> bool:
        """True when ``wanted`` is this machine's full ID or its 8-character short ID."""
        return wanted in (self.id, self.short_id)


@dataclass(frozen=True, slots=True)
class UnitState:
    """The state of a unit on one machine, as published by that machine's agent.

    ``load_state``/``active_state``/``sub_state`` are systemd's; ``state`` is the fleet state the agent
    applied (LOADED: loaded into systemd; LAUNCHED: started).
    """

    name: UnitName
    machine_id: MachineID
    load_state: str
    active_state: str
    sub_state: str
    hash: str
    state: TargetState = TargetState.LOADED


@dataclass(frozen=True, slots=True)
class Rescheduled:
    """``reschedules/<unit>``: how often the engine moved a failed unit (Reschedule=on-failure) at this
    hash, when last (wall-clock seconds), the machines it failed on, and what it did last time (shown by
    fleetctl status and list-units)."""

    hash: str
    attempts: int
    last: float
    machines: tuple[MachineID, ...]
    reason: str


# The engine's plan: what ``fleetd.engine.plan.plan_cluster`` computes and ``Registry.apply_plan`` writes.
# The values live here, with the other types shared across packages, so the registry imports nothing of the
# engine (``fleetd.engine.plan`` re-exports them).


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
    # Units that need a machine and found none, with why (published for fleetctl; not actions).
    unplaceable: Mapping[UnitName, str] = field(default_factory=dict)
    # Reschedule records to write (None: delete), and the wall-clock time a backoff ends (plan again then).
    rescheduled: Mapping[UnitName, Rescheduled | None] = field(default_factory=dict)
    retry_at: float | None = None
