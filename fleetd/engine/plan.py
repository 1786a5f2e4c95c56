"""The engine planner (pure): cluster snapshot in, ordered schedule/unschedule actions out."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping

from fleetd.engine.placement import ConflictIndex, LoadIndex, can_run, has_patterns, replaced_units
from fleetd.engine.unblocked import Unblocked
from fleetd.model import (
    Action,
    EnginePlan,
    MachineID,
    MachineState,
    Rescheduled,
    Schedule,
    TargetState,
    Unit,
    UnitName,
    Unschedule,
)
from fleetd.registry.snapshot import ClusterSnapshot

__all__ = [
    "MACHINE_CORDONED",
    "MACHINE_UNABLE",
    "MACHINE_WENT_AWAY",
    "REASON_KINDS",
    "RESCHEDULE_BACKOFF",
    "RESCHEDULE_EXHAUSTED",
    "RESCHEDULE_MOVED",
    "RESCHEDULE_NOWHERE",
    "SCHEDULE_PLACED",
    "SCHEDULE_UPDATED",
    "UNPLACEABLE_CAP",
    "UNPLACEABLE_CORDONED",
    "UNPLACEABLE_FULL_OR_CORDONED",
    "UNPLACEABLE_MACHINE_ID",
    "UNPLACEABLE_METADATA",
    "UNPLACEABLE_MOVES",
    "UNPLACEABLE_NO_MACHINES",
    "UNPLACEABLE_PEER",
    "UNPLACEABLE_REFUSED",
    "UNSCHEDULE_DESTROYED",
    "UNSCHEDULE_DUPLICATE",
    "UNSCHEDULE_GLOBAL",
    "UNSCHEDULE_INACTIVE",
    "Action",
    "EnginePlan",
    "Schedule",
    "Unschedule",
    "plan_cluster",
    "reason_kind",
    "stays_when_drained",
]

SCHEDULE_PLACED = "unit not scheduled: placed on the least-loaded machine able to run it"
SCHEDULE_UPDATED = "schedule entry differs from the unit's hash or target state"
UNSCHEDULE_DESTROYED = "unit destroyed"
UNSCHEDULE_GLOBAL = "unit is global: agents run it, the engine does not schedule it"
UNSCHEDULE_INACTIVE = "target state inactive"
UNSCHEDULE_DUPLICATE = "duplicate schedule entry"
MACHINE_WENT_AWAY = "target Machine({machine}) went away"
MACHINE_UNABLE = "target Machine({machine}) unable to run unit: {reason}"
UNPLACEABLE_PEER = "its MachineOf peer {peer} is not scheduled"
UNPLACEABLE_NO_MACHINES = "no machine is in the cluster"
UNPLACEABLE_MACHINE_ID = "the machine named by MachineID ({machine}) is not in the cluster"
UNPLACEABLE_METADATA = "no machine has the metadata {metadata}"
UNPLACEABLE_REFUSED = "no machine can run it; the least loaded candidate ({machine}): {reason}"
UNPLACEABLE_MOVES = "every machine able to run it would have to replace a unit that may not move now"
UNPLACEABLE_CAP = "every machine able to run it is at its unit cap"
UNPLACEABLE_CORDONED = "every machine able to run it is cordoned"
UNPLACEABLE_FULL_OR_CORDONED = "every machine able to run it is cordoned or at its unit cap"
MACHINE_CORDONED = "target Machine({machine}) is cordoned: the unit moves to another machine"
RESCHEDULE_MOVED = "failed on Machine({machine}): moved to another machine (reschedule {attempt} of {limit})"
RESCHEDULE_BACKOFF = "failed on Machine({machine}): next reschedule after a backoff of {backoff:g}s"
RESCHEDULE_EXHAUSTED = "failed on Machine({machine}): left failed after {limit} reschedule attempts"
RESCHEDULE_NOWHERE = "failed on Machine({machine}): no other machine can run it, left failed"


_REASON_KINDS = (
    ("peer", UNPLACEABLE_PEER),
    ("no_machines", UNPLACEABLE_NO_MACHINES),
    ("machine_id", UNPLACEABLE_MACHINE_ID),
    ("metadata", UNPLACEABLE_METADATA),
    ("refused", UNPLACEABLE_REFUSED),
    ("moves", UNPLACEABLE_MOVES),
    ("cap", UNPLACEABLE_CAP),
    ("cordoned", UNPLACEABLE_CORDONED),
    ("cap_or_cordoned", UNPLACEABLE_FULL_OR_CORDONED),
)
REASON_KINDS = tuple(kind for kind, _ in _REASON_KINDS)


def reason_kind(reason: str) -> str:
    """Which of the planner's reasons ``reason`` is (a metric label: bounded, no unit or machine names)."""
    for kind, template in _REASON_KINDS:
        fixed, brace, _ = template.partition("{")
        if reason == template if not brace else reason.startswith(fixed):
            return kind
    return "other"


def stays_when_drained(unit: Unit) -> bool:
    """A unit a cordon does not move: one pinned with MachineID, or one that follows a MachineOf peer (it
    moves only with its peer). Global units are the agents' and are not drained either."""
    req = unit.requirements
    return unit.is_global or req.machine_id is not None or bool(req.peers)


def plan_cluster(snapshot: ClusterSnapshot) -> EnginePlan:
    """Plan the schedule for ``snapshot``: what to unschedule, place and update, each with a reason.

    Deterministic: units are visited in name order and machines in (load, machine ID) order, so the
    plan does not depend on the snapshot mappings' iteration order.
    """
    fold = _Fold(snapshot)
    actions = fold.run()
    return EnginePlan(snapshot.revision, actions, fold.unplaceable(), fold.rescheduled, fold.retry_at)


_SMALL_POOL = 32  # metadata matching this few machines: sort them per unit rather than keep an index
_MAX_MOVES = 8  # a unit replaced this often in one pass stays put (ends cycles of Replaces)
_LONG_WALK = 64  # blocked or cordoned machines skipped for one unit before its kind gets an Unblocked index

MetadataKey = tuple[tuple[str, tuple[str, ...]], ...]


class _Host:
    """A machine in the working copy: its scheduled units and the Global units it runs (a MachineView)."""

    __slots__ = ("conflicts", "globals", "machine", "patterned", "scheduled")

    def __init__(self, machine: MachineState, conflicts: ConflictIndex) -> None:
        self.machine = machine
        self.conflicts = conflicts
        self.scheduled: dict[UnitName, Unit] = {}
        self.globals: dict[UnitName, Unit] = {}
        self.patterned: dict[UnitName, Unit] = {}

    @property
    def load(self) -> int:
        return len(self.scheduled) + len(self.globals)

    def full(self, evicted: int = 0) -> bool:
        """At its unit cap (MachineState.max_units) once ``evicted`` units leave: no room for one more.

        Only new placements check it: units already over the cap (it was lowered) stay where they are."""
        cap = self.machine.max_units
        return cap > 0 and self.load - evicted >= cap

    def has_unit(self, name: UnitName) -> bool:
        return name in self.scheduled or name in self.globals

    def get(self, name: UnitName) -> Unit | None:
        return self.scheduled.get(name) or self.globals.get(name)

    def units(self) -> Iterable[Unit]:
        return itertools.chain(self.scheduled.values(), self.globals.values())

    def units_with_patterns(self) -> Collection[Unit]:
        return self.patterned.values()

    def add(self, unit: Unit, into: dict[UnitName, Unit]) -> None:
        into[unit.name] = unit
        self.conflicts.add(unit, self.machine.id)
        if has_patterns(unit):
            self.patterned[unit.name] = unit

    def discard(self, name: UnitName, source: dict[UnitName, Unit]) -> None:
        unit = source.pop(name, None)
        if unit is not None:
            self.conflicts.remove(unit, self.machine.id)
            self.patterned.pop(name, None)


def _unable(machine_id: MachineID, reason: str) -> str:
    return MACHINE_UNABLE.format(machine=machine_id, reason=reason)


class _Fold:
    """The working copy threaded through one pass: every decision updates it before the next is made."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        self.units = snapshot.units
        self.conflicts = ConflictIndex(p for unit in self.units.values() for p in unit.requirements.conflicts)
        self.hosts = {
            machine_id: _Host(snapshot.machines[machine_id], self.conflicts)
            for machine_id in sorted(snapshot.machines)
        }
        self.short_ids: dict[str, list[MachineID]] = {}
        self.by_metadata: dict[tuple[str, str], set[MachineID]] = {}
        for machine_id, host in self.hosts.items():
            self.short_ids.setdefault(host.machine.short_id, []).append(machine_id)
            for pair in host.machine.metadata.items():
                self.by_metadata.setdefault(pair, set()).add(machine_id)
        # Unit names in order. The snapshot's units come in key order but for the newest (a mirror lists in
        # key order, then appends), so this sort is nearly linear; schedule entries are visited in this
        # order too, instead of sorting 100,000 names grouped by machine, one long hold of the interpreter
        # beside the event loop.
        self.names = sorted(self.units)
        self.globals = [
            self.units[name]
            for name in self.names
            if self.units[name].is_global and self.units[name].target_state is not TargetState.INACTIVE
        ]
        self.globals_changed = False
        self.globals_with_peers = any(unit.requirements.peers for unit in self.globals)
        self.placed: dict[UnitName, MachineID] = {}
        self.events: list[Action] = []
        self.order = LoadIndex()
        self.pools: dict[MetadataKey, tuple[frozenset[MachineID], LoadIndex | None]] = {}
        self.pools_of: dict[MachineID, list[LoadIndex]] = {}
        self.moves: dict[UnitName, int] = {}
        self.held: set[UnitName] = set()  # units of absent machines in their grace: left as they are
        self.capped = any(host.machine.max_units for host in self.hosts.values())
        self.cordoned = frozenset(snapshot.cordoned & self.hosts.keys())
        self.unblocked = Unblocked(self.conflicts, self.cordoned, lambda m: self.hosts[m].load)
        self.avoid: dict[UnitName, frozenset[MachineID]] = {}  # failed units moving: where they failed
        self.rescheduled: dict[UnitName, Rescheduled | None] = {}  # records to write (None: delete)
        self.retry_at: float | None = None

    # -- the pass -----------------------------------------------------------------------------------------

    def run(self) -> tuple[Action, ...]:
        self._keep_or_drop_entries()
        self._check_placed()
        self._reschedule_failed()
        self._drain_cordoned()
        self._place_unplaced()
        return self._net_actions()

    def unplaceable(self) -> dict[UnitName, str]:
        """Every unit that needs a machine and has none after the pass, with why (after ``run``)."""
        unplaced = sorted(
            name
            for name, unit in self.units.items()
            if not unit.is_global and unit.target_state is not TargetState.INACTIVE
            and name not in self.placed and name not in self.held
        )
        return {name: self._why_unplaced(self.units[name]) for name in unplaced}

    def _why_unplaced(self, unit: Unit) -> str:
        """The first of: a peer not scheduled, a MachineID or metadata no machine has, else what the least
        loaded candidate says (deterministic, so an unchanged cluster publishes the same reason)."""
        req = unit.requirements
        peers = [UnitName(peer) for peer in req.peers if peer != unit.name]
        if peers and self.placed.get(peers[0]) is None and not any(
            peers[0] in host.globals for host in self.hosts.values()
        ):
            return UNPLACEABLE_PEER.format(peer=peers[0])
        if not self.hosts:
            return UNPLACEABLE_NO_MACHINES
        if req.machine_id is not None and req.machine_id not in self.hosts and not self.short_ids.get(
            req.machine_id
        ):
            return UNPLACEABLE_MACHINE_ID.format(machine=req.machine_id)
        if req.metadata and not self._pool(req.metadata)[0]:
            pairs = sorted(req.metadata.items())
            wanted = ", ".join(f"{key}={'|'.join(sorted(values))}" for key, values in pairs)
            return UNPLACEABLE_METADATA.format(metadata=wanted)
        if self.capped or self.cordoned:
            able = [m for m in self._candidates(unit) if can_run(self.hosts[m], unit).ok]
            cordoned = [m in self.cordoned for m in able]
            if able and all(self.hosts[m].full() or m in self.cordoned for m in able):
                return (
                    UNPLACEABLE_CORDONED if all(cordoned)
                    else UNPLACEABLE_CAP if not any(cordoned)
                    else UNPLACEABLE_FULL_OR_CORDONED
                )
        first = next(self._candidates(unit), None)
        verdict = can_run(self.hosts[first], unit) if first is not None else None
        if first is not None and verdict is not None and not verdict.ok:
            return UNPLACEABLE_REFUSED.format(machine=first, reason=verdict.reason)
        return UNPLACEABLE_MOVES

    def _keep_or_drop_entries(self) -> None:
        """Drop entries of destroyed, Global and inactive units and of dead machines; keep the rest as is."""
        schedule = self.snapshot.schedule
        entries = [name for name in self.names if name in schedule]
        orphans = [name for name in schedule if name not in self.units]  # destroyed units: few
        if orphans:
            entries = sorted(entries + sorted(orphans))  # two sorted runs: a merge
        for name in entries:
            entry = schedule[name]
            unit = self.units.get(name)
            reason = self._drop_reason(unit, entry.machine_id)
            if entry.machine_id in self.snapshot.held_machines and reason == MACHINE_WENT_AWAY.format(
                machine=entry.machine_id
            ):
                self.held.add(name)
                continue
            if reason is not None or unit is None:
                self.events.append(Unschedule(name, entry.machine_id, reason or UNSCHEDULE_DESTROYED))
                continue
            host = self.hosts[entry.machine_id]
            host.add(unit, host.scheduled)
            self.placed[name] = entry.machine_id
        for name, machine_id in sorted(self.snapshot.extra_schedule):
            self.events.append(Unschedule(name, machine_id, UNSCHEDULE_DUPLICATE))
        for machine_id, host in self.hosts.items():
            self._refresh_globals(host)
            self.order.add(machine_id, host.load)

    def _drop_reason(self, unit: Unit | None, machine_id: MachineID) -> str | None:
        if unit is None:
            return UNSCHEDULE_DESTROYED
        if unit.is_global:
            return UNSCHEDULE_GLOBAL
        if unit.target_state is TargetState.INACTIVE:
            return UNSCHEDULE_INACTIVE
        if machine_id not in self.hosts:
            return MACHINE_WENT_AWAY.format(machine=machine_id)
        return None

    def _check_placed(self) -> None:
        """Unschedule each kept unit its machine can no longer run (followers of a dropped peer too)."""
        for name in sorted(self.placed):
            machine_id = self.placed.get(name)
            if machine_id is None:
                continue  # dropped already, with a peer
            verdict = can_run(self.hosts[machine_id], self.units[name])
            if not verdict.ok:
                self._remove(name, _unable(machine_id, verdict.reason))

    def _drain_cordoned(self) -> None:
        """Unschedule the movable units of cordoned machines (their followers go with them, in _remove)."""
        if not self.cordoned:
            return
        for name in sorted(self.placed):
            machine_id = self.placed.get(name)
            if machine_id in self.cordoned and not stays_when_drained(self.units[name]):
                self._remove(name, MACHINE_CORDONED.format(machine=machine_id))

    def _reschedule_failed(self) -> None:
        """Move each Reschedule=on-failure unit that failed on its machine to another machine able to run it
        (never one it failed on at this hash), at most ``reschedule_attempts`` times per hash and
        ``reschedule_backoff`` seconds apart; otherwise leave it failed where it is, saying why. Records of
        destroyed units, and of units whose body changed since, are deleted (a new body starts counting anew).
        """
        for name, record in sorted(self.snapshot.rescheduled.items()):
            unit = self.units.get(name)
            if unit is None or unit.hash != record.hash or not unit.requirements.reschedule:
                self.rescheduled[name] = None
        for name in sorted(self.snapshot.failed):
            unit = self.units.get(name)
            machine_id = self.placed.get(name)
            if unit is None or not unit.requirements.reschedule or machine_id is None:
                continue
            if machine_id not in self.snapshot.failed[name]:
                continue
            self._reschedule(unit, machine_id)

    def _reschedule(self, unit: Unit, machine_id: MachineID) -> None:
        req = unit.requirements
        record = self.snapshot.rescheduled.get(unit.name)
        if record is not None and record.hash != unit.hash:
            record = None
        attempts, tried = (record.attempts, set(record.machines)) if record is not None else (0, set())
        tried.add(machine_id)
        last = record.last if record is not None else 0.0
        if attempts >= req.reschedule_attempts:
            reason = RESCHEDULE_EXHAUSTED.format(machine=machine_id, limit=req.reschedule_attempts)
        elif record is not None and self.snapshot.now < last + req.reschedule_backoff:
            reason = RESCHEDULE_BACKOFF.format(machine=machine_id, backoff=req.reschedule_backoff)
            ends = last + req.reschedule_backoff
            self.retry_at = ends if self.retry_at is None else min(self.retry_at, ends)
        else:
            self.avoid[unit.name] = frozenset(tried)
            if self._choose(unit) is None:
                reason = RESCHEDULE_NOWHERE.format(machine=machine_id)
            else:
                attempts += 1
                last = self.snapshot.now
                reason = RESCHEDULE_MOVED.format(
                    machine=machine_id, attempt=attempts, limit=req.reschedule_attempts
                )
                self._remove(unit.name, reason)
        wanted = Rescheduled(unit.hash, attempts, last, tuple(sorted(tried)), reason)
        if wanted != record:
            self.rescheduled[unit.name] = wanted
        else:
            self.rescheduled.pop(unit.name, None)

    def _place_unplaced(self) -> None:
        """Place every unplaced unit in name order; a MachineOf follower waits until its peers are decided."""
        queue = sorted(
            name
            for name, unit in self.units.items()
            if not unit.is_global and unit.target_state is not TargetState.INACTIVE
            and name not in self.placed and name not in self.held
        )
        pending = set(queue)
        waiting: dict[UnitName, list[UnitName]] = {}
        failed: list[UnitName] = []
        while queue:
            name = heapq.heappop(queue)
            if name not in pending:
                continue
            unit = self.units[name]
            blocker = next((p for p in unit.requirements.peers if p != name and p in pending), None)
            if blocker is not None:
                waiting.setdefault(UnitName(blocker), []).append(name)
                continue
            pending.discard(name)
            choice = self._choose(unit)
            if choice is None:
                failed.append(name)
            else:
                requeue = self._place(unit, *choice)
                if requeue or self.globals_changed:  # units that found no machine may find one now
                    self.globals_changed = False
                    requeue.extend(failed)
                    failed.clear()
                for again in requeue:
                    pending.add(again)
                    heapq.heappush(queue, again)
            for follower in waiting.pop(name, ()):
                heapq.heappush(queue, follower)

    def _net_actions(self) -> tuple[Action, ...]:
        """The decisions as changes to the snapshot's entries: moves there and back again cancel out.

        Walks the placements once with lookups (no set or sort of every placement: at 100,000 units one
        such C call holds the interpreter for ~0.1 s, and the engine plans beside its event loop)."""
        schedule, extra = self.snapshot.schedule, set(self.snapshot.extra_schedule)

        def initially(name: UnitName, machine_id: MachineID) -> bool:
            entry = schedule.get(name)
            return (entry is not None and entry.machine_id == machine_id) or (name, machine_id) in extra

        actions: list[Action] = []
        seen: set[tuple[UnitName, MachineID]] = set()
        for action in self.events:
            key = (action.unit, action.machine_id)
            final = self.placed.get(action.unit) == action.machine_id
            wanted = (initially(*key) and not final) if isinstance(action, Unschedule) else (
                final and not initially(*key)
            )
            if wanted and key not in seen:
                seen.add(key)
                actions.append(action)
        updated: list[Schedule] = []
        for name, machine_id in self.placed.items():
            entry = schedule.get(name)
            unit = self.units[name]
            if entry is None or entry.machine_id != machine_id:
                stale = (name, machine_id) in extra  # kept where a malformed or duplicate entry was
            else:
                stale = (entry.hash, entry.state) != (unit.hash, unit.target_state)
            if stale:
                updated.append(Schedule(name, machine_id, unit.hash, unit.target_state, SCHEDULE_UPDATED))
        actions.extend(sorted(updated, key=lambda action: action.unit))
        return tuple(actions)

    # -- choosing a machine -----------------------------------------------------------------------------

    def _choose(self, unit: Unit) -> tuple[MachineID, list[Unit]] | None:
        """The least-loaded machine that can run ``unit``, with the units placing it there replaces."""
        blockers = self.conflicts.blockers(unit)
        if any(len(blocked) == len(self.hosts) for blocked in blockers):
            return None  # it conflicts with something on every machine
        candidates = self._candidates(unit)
        source = self._source(unit) if blockers or self.cordoned else None
        shortcut = None
        if source is not None:
            signature = self.conflicts.signature(unit)
            shortcut = self.unblocked.get(source[0], signature)
            if shortcut is not None:
                candidates = shortcut.ordered()
        skipped = 0
        for machine_id in candidates:
            if any(machine_id in blocked for blocked in blockers) or machine_id in self.cordoned:
                skipped += 1
                if skipped == _LONG_WALK and shortcut is None and source is not None:
                    built = self.unblocked.build(source[0], source[1], signature)
                    if built is not None:
                        return self._choose(unit)  # the same walk without the blocked machines
                continue
            if self.avoid and machine_id in self.avoid.get(unit.name, ()):
                continue
            host = self.hosts[machine_id]
            if not can_run(host, unit).ok:
                continue
            evicted = replaced_units(host, unit) if unit.requirements.replaces else []
            if self.capped and host.full(len(evicted)):
                continue
            if any(
                other.name not in host.scheduled or self.moves.get(other.name, 0) >= _MAX_MOVES
                for other in evicted
            ):
                continue  # it would replace a Global unit, or one moved too often in this pass
            return machine_id, evicted
        return None

    def _source(self, unit: Unit) -> tuple[Hashable, Iterable[MachineID]] | None:
        """Where ``_candidates`` takes a long load order from (a key and its machines): every machine, or a
        large metadata pool; None when the unit's candidates are few (a peer, a MachineID, a small pool)."""
        req = unit.requirements
        if any(peer != unit.name for peer in req.peers) or req.machine_id is not None:
            return None
        if req.metadata:
            eligible, pool = self._pool(req.metadata)
            return None if pool is None else (_metadata_key(req.metadata), eligible)
        return None, self.hosts.keys()

    def _candidates(self, unit: Unit) -> Iterator[MachineID]:
        """Machines worth asking, least loaded first: narrowed by MachineOf, MachineID or metadata."""
        req = unit.requirements
        peers = [UnitName(peer) for peer in req.peers if peer != unit.name]
        if peers:
            home = self.placed.get(peers[0])
            if home is not None:
                return iter((home,))
            return self._by_load(m for m, host in self.hosts.items() if peers[0] in host.globals)
        if req.machine_id is not None:
            exact = [MachineID(req.machine_id)] if req.machine_id in self.hosts else []
            return self._by_load(set(exact + self.short_ids.get(req.machine_id, [])))
        if req.metadata:
            eligible, pool = self._pool(req.metadata)
            return self._by_load(eligible) if pool is None else pool.ordered()
        return self.order.ordered()

    def _by_load(self, machine_ids: Iterable[MachineID]) -> Iterator[MachineID]:
        return iter(sorted(machine_ids, key=lambda m: (self.hosts[m].load, m)))

    def _pool(self, metadata: Mapping[str, frozenset[str]]) -> tuple[frozenset[MachineID], LoadIndex | None]:
        """The machines satisfying ``metadata``, and a load index over them when they are many (cached)."""
        key = _metadata_key(metadata)
        cached = self.pools.get(key)
        if cached is not None:
            return cached
        eligible: set[MachineID] | None = None
        for wanted, values in key:
            having: set[MachineID] = set()
            for value in values:
                having |= self.by_metadata.get((wanted, value), set())
            eligible = having if eligible is None else eligible & having
        machines = frozenset(eligible or ())
        pool = None
        if len(machines) > _SMALL_POOL:
            pool = LoadIndex({m: self.hosts[m].load for m in machines})
            for machine_id in machines:
                self.pools_of.setdefault(machine_id, []).append(pool)
        self.pools[key] = (machines, pool)
        return machines, pool

    # -- changing the working copy ------------------------------------------------------------------------

    def _place(self, unit: Unit, machine_id: MachineID, evicted: list[Unit]) -> list[UnitName]:
        """Place ``unit``; move away the units it replaces there. Returns the units that need a machine."""
        host = self.hosts[machine_id]
        host.add(unit, host.scheduled)
        self.placed[unit.name] = machine_id
        self.events.append(Schedule(unit.name, machine_id, unit.hash, unit.target_state, SCHEDULE_PLACED))
        self._update_load(machine_id)
        # A Global unit with MachineOf (not a valid combination) may start running here now.
        removed = self._settle(machine_id) if self.globals_with_peers else []
        for other in evicted:
            if other.name in self.placed:
                self.moves[other.name] = self.moves.get(other.name, 0) + 1
                verdict = can_run(host, other)
                removed.extend(self._remove(other.name, _unable(machine_id, verdict.reason)))
        return removed

    def _remove(self, name: UnitName, reason: str) -> list[UnitName]:
        """Unschedule ``name``, then every unit on that machine that cannot run without it."""
        machine_id = self.placed.pop(name)
        host = self.hosts[machine_id]
        host.discard(name, host.scheduled)
        self.events.append(Unschedule(name, machine_id, reason))
        return [name, *self._settle(machine_id)]

    def _settle(self, machine_id: MachineID) -> list[UnitName]:
        """After a change on a machine: redo its Global units, drop units missing a peer, update its load."""
        host = self.hosts[machine_id]
        self._refresh_globals(host)
        removed: list[UnitName] = []
        for other in sorted(n for n, u in host.scheduled.items() if u.requirements.peers):
            if other in host.scheduled:
                verdict = can_run(host, self.units[other])
                if not verdict.ok:
                    removed.extend(self._remove(other, _unable(machine_id, verdict.reason)))
        self._update_load(machine_id)
        return removed

    def _refresh_globals(self, host: _Host) -> None:
        """The Global units this machine runs: in name order, those it can run beside what it has."""
        if not self.globals and not host.globals:
            return
        before = list(host.globals)
        for name in before:
            host.discard(name, host.globals)
        for unit in self.globals:
            if can_run(host, unit).ok:
                host.add(unit, host.globals)
        if list(host.globals) != before:
            self.globals_changed = True

    def _update_load(self, machine_id: MachineID) -> None:
        load = self.hosts[machine_id].load
        self.order.set_load(machine_id, load)
        for pool in self.pools_of.get(machine_id, ()):
            pool.set_load(machine_id, load)
        self.unblocked.set_load(machine_id, load)


def _metadata_key(metadata: Mapping[str, frozenset[str]]) -> MetadataKey:
    return tuple(sorted((k, tuple(sorted(values))) for k, values in metadata.items()))
