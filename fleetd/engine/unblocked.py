"""Load indexes of the machines a kind of unit is not blocked on (pure): a planner shortcut.

When Conflicts block many of the least-loaded machines (or many are cordoned), walking the load order and
skipping each blocked machine costs units x blocked machines in one pass. For a candidate source (all
machines, or one metadata pool) and a Conflicts signature (the blocker sets of ``ConflictIndex`` a unit is
judged against), an ``Unblocked`` index keeps only the machines no set of the signature holds and that are
not cordoned, in the same (load, machine ID) order, kept in step with placements through the conflict
index's change hook and the planner's load updates. Walking it yields the same first choice as walking the
full order and skipping, so plans do not change; only their cost does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from fleetd.engine.placement import BlockerKey, ConflictIndex, LoadIndex
from fleetd.model import MachineID

__all__ = ["MAX_INDEXES", "Unblocked"]

MAX_INDEXES = 64  # distinct (source, signature) shortcuts kept in one pass; beyond that the planner walks

Signature = tuple[BlockerKey, ...]


class _Shortcut:
    __slots__ = ("index", "members", "signature")

    def __init__(self, members: frozenset[MachineID], signature: Signature) -> None:
        self.members = members
        self.signature = signature
        self.index = LoadIndex()


class Unblocked:
    """The shortcuts of one planner pass, keyed by (candidate source, Conflicts signature)."""

    __slots__ = ("_by_key", "_conflicts", "_cordoned", "_load", "_shortcuts")

    def __init__(
        self, conflicts: ConflictIndex, cordoned: frozenset[MachineID], load: Callable[[MachineID], int]
    ) -> None:
        self._conflicts = conflicts
        self._cordoned = cordoned
        self._load = load
        self._shortcuts: dict[tuple[Hashable, Signature], _Shortcut] = {}
        self._by_key: dict[BlockerKey, list[_Shortcut]] = {}
        conflicts.on_change = self._changed

    def get(self, source: Hashable, signature: Signature) -> LoadIndex | None:
        found = self._shortcuts.get((source, signature))
        return None if found is None else found.index

    def build(
        self,
        source: Hashable,
        members: Iterable[MachineID],
        signature: Signature,
    ) -> LoadIndex | None:
        """Index the unblocked machines of ``members`` (the source's machines, fixed for the pass); None
        when the pass already keeps ``MAX_INDEXES`` shortcuts."""
        if len(self._shortcuts) >= MAX_INDEXES:
            return None
        shortcut = _Shortcut(frozenset(members), signature)
        for machine_id in sorted(shortcut.members):
            if self._eligible(shortcut, machine_id):
                shortcut.index.add(machine_id, self._load(machine_id))
        self._shortcuts[(source, signature)] = shortcut
        for key in signature:
            self._by_key.setdefault(key, []).append(shortcut)
        return shortcut.index

    def set_load(self, machine_id: MachineID, load: int) -> None:
        for shortcut in self._shortcuts.values():
            if machine_id in shortcut.index:
                shortcut.index.set_load(machine_id, load)

    def _eligible(self, shortcut: _Shortcut, machine_id: MachineID) -> bool:
        return (
            machine_id in shortcut.members
            and machine_id not in self._cordoned
            and not any(self._conflicts.blocks(key, machine_id) for key in shortcut.signature)
        )

    def _changed(self, key: BlockerKey, machine_id: MachineID) -> None:
        for shortcut in self._by_key.get(key, ()):
            eligible = self._eligible(shortcut, machine_id)
            present = machine_id in shortcut.index
            if eligible and not present:
                shortcut.index.add(machine_id, self._load(machine_id))
            elif present and not eligible:
                shortcut.index.remove(machine_id)
