"""Placement predicates (pure): can a machine run a unit, and which machine is least loaded.

``can_run`` is the one predicate both planners use: the engine for every unit it places or keeps, the agent
for Global units. It sees a machine through a ``MachineView``: the machine plus the units placed there
(scheduled units and the Global units it runs). ``LocalView`` is the plain form over a mapping, for one
machine and its local units; the engine supplies its own indexed view.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from fleetd.glob import has_magic, match
from fleetd.model import MachineID, MachineState, Unit, UnitName

__all__ = [
    "BlockerKey",
    "ConflictIndex",
    "LoadIndex",
    "LocalView",
    "MachineView",
    "Verdict",
    "can_run",
    "find_conflict",
    "find_replacer",
    "has_patterns",
    "metadata_satisfied",
    "replaced_units",
]

MACHINE_ID_MISMATCH = 'agent ID "{machine}" does not match required "{wanted}"'
METADATA_INSUFFICIENT = "local Machine metadata insufficient"
PEER_MISSING = "required peer Unit({peer}) is not scheduled locally"
CONFLICT_FOUND = "found conflict with locally-scheduled Unit({unit})"
REPLACED_BY = "replaced by locally-scheduled Unit({unit})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a machine can run a unit; ``reason`` says why not (empty when ``ok``)."""

    ok: bool
    reason: str = ""


ABLE = Verdict(True)


class MachineView(Protocol):
    """A machine as placement sees it: the machine and the units placed on it."""

    @property
    def machine(self) -> MachineState: ...

    def has_unit(self, name: UnitName) -> bool:
        """True when the unit is placed on this machine (scheduled with a non-inactive state, or Global)."""
        ...

    def get(self, name: UnitName) -> Unit | None:
        """The unit of that name placed on this machine, or None."""
        ...

    def units(self) -> Iterable[Unit]:
        """Every unit placed on this machine."""
        ...

    def units_with_patterns(self) -> Collection[Unit]:
        """The units placed on this machine that declare Conflicts or Replaces (a subset of ``units``)."""
        ...


@dataclass(frozen=True, slots=True)
class LocalView:
    """One machine and its local units, as a ``MachineView`` (the agent's form)."""

    machine: MachineState
    local: Mapping[UnitName, Unit]

    def has_unit(self, name: UnitName) -> bool:
        return name in self.local

    def get(self, name: UnitName) -> Unit | None:
        return self.local.get(name)

    def units(self) -> Iterable[Unit]:
        return self.local.values()

    def units_with_patterns(self) -> Collection[Unit]:
        return [unit for unit in self.local.values() if has_patterns(unit)]


def has_patterns(unit: Unit) -> bool:
    return bool(unit.requirements.conflicts or unit.requirements.replaces)


def metadata_satisfied(have: Mapping[str, str], wanted: Mapping[str, frozenset[str]]) -> bool:
    """Every wanted key is present with one of its allowed values (values OR-ed, keys AND-ed)."""
    return all(have.get(key) in allowed for key, allowed in wanted.items())


def can_run(view: MachineView, unit: Unit) -> Verdict:
    """Can ``view``'s machine run ``unit``? Checks MachineID, metadata, peers, Conflicts, then Replaces.

    The unit itself, if already placed there, is ignored. A unit that a local unit replaces cannot run
    there (unless the two replace each other: circular Replaces are ignored); the replacer itself can.
    """
    req = unit.requirements
    machine = view.machine
    if req.machine_id is not None and not machine.matches_id(req.machine_id):
        return Verdict(False, MACHINE_ID_MISMATCH.format(machine=machine.id, wanted=req.machine_id))
    if req.metadata and not metadata_satisfied(machine.metadata, req.metadata):
        return Verdict(False, METADATA_INSUFFICIENT)
    for peer in req.peers:
        if peer != unit.name and not view.has_unit(UnitName(peer)):
            return Verdict(False, PEER_MISSING.format(peer=peer))
    if not has_patterns(unit) and not view.units_with_patterns():
        return ABLE  # nothing on either side to conflict or replace (most units: a pass checks every one)
    conflict = find_conflict(view, unit)
    if conflict is not None:
        return Verdict(False, CONFLICT_FOUND.format(unit=conflict))
    replacer = find_replacer(view, unit)
    if replacer is not None:
        return Verdict(False, REPLACED_BY.format(unit=replacer))
    return ABLE


def _matches_any(patterns: Iterable[str], name: str) -> bool:
    # a loop, not any() over a generator: called for every candidate machine of a pass
    for pattern in patterns:  # noqa: SIM110
        if match(pattern, name):
            return True
    return False


def _matching_locals(view: MachineView, unit: Unit, patterns: tuple[str, ...]) -> Iterator[UnitName]:
    """Local units (other than ``unit``) whose names match one of ``patterns``; plain names are looked up."""
    if not patterns:
        return
    magic = [pattern for pattern in patterns if has_magic(pattern)]
    for pattern in patterns:
        if pattern not in magic and pattern != unit.name and view.has_unit(UnitName(pattern)):
            yield UnitName(pattern)
    if magic:
        for other in view.units():
            if other.name != unit.name and _matches_any(magic, other.name):
                yield other.name


def find_conflict(view: MachineView, unit: Unit) -> UnitName | None:
    """The first (by name) local unit that conflicts with ``unit`` in either direction, or None."""
    found = set(_matching_locals(view, unit, unit.requirements.conflicts))
    for other in view.units_with_patterns():
        if other.name != unit.name and _matches_any(other.requirements.conflicts, unit.name):
            found.add(other.name)
    return min(found) if found else None


def _replaces(replacer: Unit, replaced: Unit) -> bool:
    """``replacer`` replaces ``replaced`` and not the other way round (circular Replaces are ignored).

    A Global unit replaces nothing, and a unit never replaces its own MachineOf peer (fleet refuses both
    combinations when units are submitted).
    """
    return (
        not replacer.is_global
        and _matches_any(replacer.requirements.replaces, replaced.name)
        and not _matches_any(replaced.requirements.replaces, replacer.name)
        and replaced.name not in replacer.requirements.peers
    )


def find_replacer(view: MachineView, unit: Unit) -> UnitName | None:
    """The first (by name) local unit that replaces ``unit``, or None."""
    found = [
        other.name
        for other in view.units_with_patterns()
        if other.name != unit.name and other.requirements.replaces and _replaces(other, unit)
    ]
    return min(found) if found else None


def replaced_units(view: MachineView, unit: Unit) -> list[Unit]:
    """The local units (by name order) that ``unit`` replaces."""
    found = [view.get(name) for name in set(_matching_locals(view, unit, unit.requirements.replaces))]
    return sorted((other for other in found if other is not None and _replaces(unit, other)),
                  key=lambda other: other.name)


class LoadIndex:
    """Machines ordered by (load, machine ID): one sorted list of IDs per load level.

    Moving a machine between levels is a bisect and an insert; walking the order visits levels from the
    least loaded up, each in machine-ID order (byte-wise string order, as fleet).
    """

    __slots__ = ("_buckets", "_levels", "_load")

    def __init__(self, loads: Mapping[MachineID, int] | None = None) -> None:
        self._buckets: dict[int, list[MachineID]] = {}
        self._levels: list[int] = []
        self._load: dict[MachineID, int] = {}
        for machine_id, load in sorted((loads or {}).items()):
            self.add(machine_id, load)

    def __len__(self) -> int:
        return len(self._load)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._load

    def add(self, machine_id: MachineID, load: int) -> None:
        self._load[machine_id] = load
        bucket = self._buckets.get(load)
        if bucket is None:
            self._buckets[load] = [machine_id]
            insort(self._levels, load)
        else:
            insort(bucket, machine_id)

    def remove(self, machine_id: MachineID) -> None:
        load = self._load.pop(machine_id)
        bucket = self._buckets[load]
        del bucket[bisect_left(bucket, machine_id)]
        if not bucket:
            del self._buckets[load]
            del self._levels[bisect_left(self._levels, load)]

    def set_load(self, machine_id: MachineID, load: int) -> None:
        if self._load.get(machine_id) != load:
            self.remove(machine_id)
            self.add(machine_id, load)

    def ordered(self) -> Iterator[MachineID]:
        """Machine IDs from the least loaded; do not change the index while iterating."""
        for level in self._levels:
            yield from self._buckets[level]


BlockerKey = tuple[Literal["named", "declared"], str]
"""One set of machines a unit may be blocked by: those holding a unit a pattern names, or declaring it."""

BlockerHook = Callable[[BlockerKey, MachineID], None]


class ConflictIndex:
    """Per Conflicts pattern: the machines holding a unit it names, and those holding a unit declaring it.

    A unit conflicts with every machine in ``blockers(unit)``, so the engine can skip (or give up on)
    machines without running ``can_run`` on each: this keeps a pass fast when many units conflict.
    ``on_change``, when set, is called with the set and the machine whenever a machine enters or leaves one.
    """

    __slots__ = ("_declared", "_magic", "_matching", "_named", "_plain", "on_change")

    def __init__(self, patterns: Iterable[str]) -> None:
        unique = sorted(set(patterns))
        self._magic = [pattern for pattern in unique if has_magic(pattern)]
        self._plain = {pattern for pattern in unique if not has_magic(pattern)}
        self._named: dict[str, dict[MachineID, int]] = {pattern: {} for pattern in unique}
        self._declared: dict[str, dict[MachineID, int]] = {pattern: {} for pattern in unique}
        self._matching: dict[str, tuple[str, ...]] = {}
        self.on_change: BlockerHook | None = None

    def _patterns_matching(self, name: str) -> tuple[str, ...]:
        found = self._matching.get(name)
        if found is None:
            plain = (name,) if name in self._plain else ()
            found = plain + tuple([pattern for pattern in self._magic if match(pattern, name)])
            self._matching[name] = found
        return found

    def add(self, unit: Unit, machine_id: MachineID) -> None:
        self._count(unit, machine_id, 1)

    def remove(self, unit: Unit, machine_id: MachineID) -> None:
        self._count(unit, machine_id, -1)

    def _count(self, unit: Unit, machine_id: MachineID, step: int) -> None:
        if not self._named:
            return  # no unit declares a pattern: nothing to count
        keys: list[BlockerKey] = [("named", p) for p in self._patterns_matching(unit.name)]
        keys += [("declared", p) for p in unit.requirements.conflicts if p in self._declared]
        for key in keys:
            counts = self._sets(key[0])[key[1]]
            total = counts.get(machine_id, 0) + step
            if total:
                counts[machine_id] = total
            else:
                del counts[machine_id]
            if self.on_change is not None and total in (0, step):
                self.on_change(key, machine_id)

    def _sets(self, kind: Literal["named", "declared"]) -> dict[str, dict[MachineID, int]]:
        return self._named if kind == "named" else self._declared

    def signature(self, unit: Unit) -> tuple[BlockerKey, ...]:
        """Every set ``blockers(unit)`` may draw from, empty or not (stable while the pass goes on)."""
        keys: list[BlockerKey] = [("named", p) for p in unit.requirements.conflicts if p in self._named]
        keys += [("declared", p) for p in self._patterns_matching(unit.name)]
        return tuple(sorted(set(keys)))

    def blocks(self, key: BlockerKey, machine_id: MachineID) -> bool:
        """Is ``machine_id`` in the set ``key``?"""
        return machine_id in self._sets(key[0])[key[1]]

    def blockers(self, unit: Unit) -> list[Mapping[MachineID, int]]:
        """Sets of machines (as mappings) where ``unit``, not placed yet, would meet a conflict."""
        out: list[Mapping[MachineID, int]] = [
            self._named[p] for p in unit.requirements.conflicts if self._named.get(p)
        ]
        out += [self._declared[p] for p in self._patterns_matching(unit.name) if self._declared[p]]
        return out
