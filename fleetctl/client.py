"""The cluster client: fleetctl's view of the registry.

It composes Registry reads into what the commands show (machines, unit states joined with machines, unit
files with current state and target) and waits for units to reach a state through one watch. Every read is
a constant number of etcd requests: whole-keyspace ranges for the list commands, batched Txns of Gets (or
per-unit prefix Gets) for named units.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from fleetd.cancel import all_or_first_failure, first_failure
from fleetd.errors import FleetError
from fleetd.metadata import MetadataChange
from fleetd.model import MachineID, MachineState, Rescheduled, TargetState, UnitName, UnitState
from fleetd.registry.cordons import Cordons
from fleetd.registry.keyspace import BadRecord, Cordon, UnitRecord, decode_machine
from fleetd.registry.kv import KeyValue, WatchCompacted
from fleetd.registry.pages import range_paged
from fleetd.registry.reasons import Reasons, Reschedules
from fleetd.registry.registry import Registry
from fleetd.registry.snapshot import ScheduledUnit
from fleetd.units import current_state, states_by_name, unit_views

if TYPE_CHECKING:
    from fleetd.engine.builder import Built

__all__ = [
    "FleetClient",
    "Goal",
    "UnitFailed",
    "UnitFileRow",
    "UnitLocation",
    "UnitStateRow",
    "UnitUnplaceable",
    "WaitTimeout",
    "current_state",
]

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class UnitStateRow:
    """One published unit state (a unit on one machine), with that machine's record when it is live."""

    state: UnitState
    machine: MachineState | None
    reason: str = ""  # what the engine did after the unit failed (Reschedule=on-failure), at this hash


@dataclass(frozen=True, slots=True)
class UnitFileRow:
    """One unit as ``list-unit-files`` shows it."""

    record: UnitRecord
    current: TargetState | None  # None for global units (they have no single current state)
    target: MachineState | MachineID | None  # where the engine placed it (the live machine when known)
    description: str
    reason: str = ""  # why no machine can run it, as the engine published (unplaced units only)


@dataclass(frozen=True, slots=True)
class UnitLocation:
    """Where a unit is (for status, journal and ssh).

    ``state`` is its current fleet state (INACTIVE when not scheduled); ``machine`` the live machine it is
    scheduled to or has published a loaded or launched state from (None when unscheduled or when that machine
    is gone).
    """

    name: str
    is_global: bool
    state: TargetState
    machine: MachineState | None
    reason: str = ""  # why no machine can run it (the engine's published reason), when unplaced
    note: str = ""  # what the engine did after it failed (Reschedule=on-failure), at its current hash


@dataclass(frozen=True, slots=True)
class Goal:
    """What a wait waits for: ``name`` reports ``state`` at ``hash`` ('' = any), and with ``active`` also
    systemd's loaded/active."""

    name: str
    state: TargetState
    hash: str = ""
    active: bool = False
    elsewhere: str = ""  # a machine ID: records from it do not count (a drained unit must come up elsewhere)


class WaitTimeout(asyncio.TimeoutError):
    """The wait budget ran out before a unit reported its state."""

    def __init__(self, goal: Goal, last: Sequence[UnitState]) -> None:
        self.goal = goal
        self.last = tuple(last)
        detail = ""
        if goal.active and last:
            seen = last[0]
            detail = f" (systemd: {seen.load_state}/{seen.active_state}/{seen.sub_state})"
        super().__init__(f"timed out waiting for unit {goal.name} to report state {goal.state.value}{detail}")


class UnitFailed(Exception):
    """systemd reports a unit being started as failed: waiting longer would not make it active."""

    def __init__(self, failures: Sequence[tuple[Goal, UnitState]]) -> None:
        self.failures = tuple(failures)
        super().__init__(
            "; ".join(
                f"unit {goal.name} failed (systemd: {seen.load_state}/{seen.active_state}/{seen.sub_state})"
                for goal, seen in self.failures
            )
        )


class UnitUnplaceable(Exception):
    """The engine published that no machine can run a unit being loaded or started (at its hash)."""

    def __init__(self, reasons: Sequence[tuple[Goal, str]]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(f"unit {goal.name} cannot be placed: {why}" for goal, why in self.reasons))


# systemd states that end a start: the unit ran and failed, or systemd could not load its file.
FAILED_ACTIVE_STATES = frozenset({"failed"})
FAILED_LOAD_STATES = frozenset({"error", "bad-setting", "masked"})


def _failed(goal: Goal, states: Sequence[UnitState]) -> UnitState | None:
    """The record showing that ``goal`` (a start) failed: launched at the goal's hash, and systemd reports
    it failed or unloadable. None while it may still come up."""
    if not goal.active:
        return None
    for state in states:
        if state.state is not TargetState.LAUNCHED or (goal.hash and state.hash != goal.hash):
            continue
        if goal.elsewhere and state.machine_id == goal.elsewhere:
            continue
        if state.active_state in FAILED_ACTIVE_STATES or state.load_state in FAILED_LOAD_STATES:
            return state
    return None


def _reached(goal: Goal, states: Sequence[UnitState]) -> UnitState | bool | None:
    """The record that satisfies ``goal`` (None when the goal is inactive and met), or False when unmet."""
    if goal.state is TargetState.INACTIVE:
        return None if not states else False
    for state in states:
        if state.state is not goal.state or (goal.hash and state.hash != goal.hash):
            continue
        if goal.elsewhere and state.machine_id == goal.elsewhere:
            continue
        if goal.active and (state.load_state != "loaded" or state.active_state != "active"):
            continue
        return state
    return False


class FleetClient:
    """fleetctl's operations on one Registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # Reads ----------------------------------------------------------------------------------------------

    async def machines(self) -> tuple[MachineState, ...]:
        return await self.registry.list_machines()

    async def machine_map(self) -> dict[MachineID, MachineState]:
        return {machine.id: machine for machine in await self.registry.list_machines()}

    async def unit_state_rows(self, *, reasons: bool = False) -> list[UnitStateRow]:
        """Every published state sorted by unit then machine (two ranges: states and machines, read at the
        same time; with ``reasons`` a third: the engine's reschedule records)."""
        states, machines = await _together(self.registry.list_unit_states(), self.machine_map())
        if not reasons:
            return [UnitStateRow(state, machines.get(state.machine_id)) for state in states]
        moved = await Reschedules(self.registry).read()
        return [
            UnitStateRow(state, machines.get(state.machine_id), _moved(moved.get(state.name), state.hash))
            for state in states
        ]

    async def unit_file_rows(self, *, descriptions: bool) -> list[UnitFileRow]:
        """Every unit sorted by name with its current state and target machine (a few ranges; bodies are
        read only for ``descriptions``)."""
        views = await unit_views(self.registry)
        machines = await self.machine_map()
        bodies: Mapping[str, str] = {}
        if descriptions:
            bodies = await self.registry.get_bodies(view.record.hash for view in views)
        rows = []
        for view in views:
            target = None if view.machine_id is None else machines.get(view.machine_id, view.machine_id)
            description = _description(bodies.get(view.record.hash, ""))
            rows.append(UnitFileRow(view.record, view.current, target, description, view.reason))
        return rows

    async def units(self, names: Sequence[str]) -> Mapping[UnitName, UnitRecord]:
        """The named units that exist (batched Gets)."""
        return await self.registry.get_units(names)

    async def all_units(self) -> tuple[UnitRecord, ...]:
        return await self.registry.list_units()

    async def body(self, record: UnitRecord) -> str | None:
        return await self.registry.get_body(record.hash)

    async def bodies(self, hashes: Iterable[str]) -> Mapping[str, str]:
        return await self.registry.get_bodies(hashes)

    async def current_states(self, names: Sequence[str]) -> dict[str, TargetState]:
        """Current state of each named unit from its published records (one Txn of prefix Gets per 128)."""
        grouped = states_by_name(await self.registry.list_unit_states(names))
        return {name: current_state(grouped.get(name, ())) for name in names}

    async def unit_locations(self, names: Sequence[str]) -> dict[str, UnitLocation | None]:
        """Each named unit's globalness, current state and machine (None for a unit that does not exist):
        the units, their published states (read once), the schedule and the machines."""
        records = await self.registry.get_units(names)
        present = [name for name in names if UnitName(name) in records]
        if not present:
            return dict.fromkeys(names)
        published = states_by_name(await self.registry.list_unit_states(present))
        schedule = await self.registry.list_schedule()
        machines = await self.machine_map()
        unplaced = [name for name in present if not schedule.get(UnitName(name))]
        reasons = await self.unplaceable(unplaced) if unplaced else {}
        moved = await Reschedules(self.registry).read(present)
        out: dict[str, UnitLocation | None] = {}
        for name in names:
            record = records.get(UnitName(name))
            if record is None:
                out[name] = None
                continue
            states = published.get(name, ())
            machine_ids = sorted(entry.machine_id for entry in schedule.get(UnitName(name), ()))
            machine_ids += sorted(state.machine_id for state in states if state.state.rank > 0)
            machine = next((machines[m] for m in machine_ids if m in machines), None)
            out[name] = UnitLocation(
                name, record.is_global, current_state(states), machine, reasons.get(name, ""),
                _moved(moved.get(UnitName(name)), record.hash),
            )
        return out

    async def cordons(self) -> dict[MachineID, Cordon]:
        """Cordoned machines (``fleetctl drain``), live or not."""
        return await Cordons(self.registry).read()

    async def live_metadata(self) -> dict[MachineID, dict[str, str]]:
        """Live metadata overrides by machine (set-metadata), live or not."""
        return await self.registry.read_metadata()

    async def configured_machine(self, machine_id: MachineID) -> MachineState | None:
        """A live machine as its fleetd published it, without live metadata (None when it is not live or
        its record does not decode)."""
        kv = await self.registry.kv.get(self.registry.keys.machine(machine_id))
        if kv is None:
            return None
        try:
            return decode_machine(kv.key, kv.value)
        except BadRecord:
            return None

    async def machine_schedule(self, machine_id: str) -> Mapping[UnitName, ScheduledUnit]:
        """What the engine scheduled to one machine."""
        return await self.registry.machine_schedule(machine_id)

    async def snapshot(self) -> Built:
        """The cluster as the engine leader would see it now: every prefix it mirrors, read at one revision
        and built into a ClusterSnapshot by the engine's own SnapshotBuilder (for ``fleetctl plan``)."""
        # the engine's modules are imported by the one command that needs them (fleetctl plan)
        from fleetd.engine.builder import SnapshotBuilder  # noqa: PLC0415
        from fleetd.engine.engine import mirrored_prefixes, parse_unit_body  # noqa: PLC0415

        keys = self.registry.keys
        revision = (await self.registry.kv.range(keys.prefix, limit=1)).revision
        read: dict[str, dict[str, KeyValue]] = {}
        for prefix in mirrored_prefixes(keys):
            result = await range_paged(self.registry.kv, prefix, revision=revision)
            read[prefix] = {kv.key: kv for kv in result.kvs}
        builder = SnapshotBuilder(keys, parse_unit_body)
        built = builder.build(
            revision, machines=read[keys.machines], units=read[keys.units], targets=read[keys.targets],
            bodies=read[keys.bodies], schedule=read[keys.schedules], bodies_revision=revision,
            cordons=read[keys.cordons], metadata=read[keys.metadata], failed=read[keys.failed],
            rescheduled=read[keys.reschedules],
        )
        # reschedule backoffs are wall-clock times, as the engine leader measures them
        return dataclasses.replace(built, snapshot=dataclasses.replace(built.snapshot, now=time.time()))

    # Writes ---------------------------------------------------------------------------------------------

    async def cordon(self, machine_id: str, reason: str) -> None:
        await Cordons(self.registry).cordon(machine_id, reason)

    async def uncordon(self, machine_id: str) -> bool:
        """False when the machine was not cordoned."""
        return await Cordons(self.registry).uncordon(machine_id)

    async def patch_metadata(self, changes: Sequence[MetadataChange]) -> None:
        await self.registry.patch_metadata(changes)

    async def reset_metadata(self, machine_id: MachineID, keys: Sequence[str] | None) -> None:
        await self.registry.reset_metadata(machine_id, keys)

    async def ensure_schema(self) -> None:
        await self.registry.ensure_schema()

    async def put_units(self, units: Sequence[tuple[UnitRecord, str]]) -> None:
        if units:
            await self.registry.put_units(units)

    async def set_targets(self, targets: Mapping[str, TargetState]) -> None:
        if targets:
            await self.registry.set_target_states(targets)

    async def destroy(self, names: Sequence[str]) -> None:
        if names:
            await self.registry.destroy_units(names)

    # Waiting --------------------------------------------------------------------------------------------

    async def wait(
        self,
        goals: Sequence[Goal],
        *,
        budget: float | None,
        progress: Callable[[int, int, dict[str, UnitState | None]], None] | None = None,
    ) -> dict[str, UnitState | None]:
        """Wait until every goal is met; returns, per unit, the record that met it (None for inactive).

        One watch on the units' states; ``budget`` (seconds) None waits forever. Raises WaitTimeout naming
        the first unit (by name) still pending, and UnitFailed as soon as systemd reports a unit being
        started as failed (naming every such unit).
        """
        pending = {goal.name: goal for goal in goals}
        met: dict[str, UnitState | None] = {}
        if not pending:
            return met
        placed = [goal for goal in goals if goal.state is not TargetState.INACTIVE and goal.hash]
        if not placed:
            return await self._wait_states(pending, met, len(goals), budget, progress)
        failure = await first_failure(
            self._wait_states(pending, met, len(goals), budget, progress), self._unplaceable(placed, pending)
        )
        if failure is not None:
            raise failure
        return met

    async def unplaceable(self, names: Sequence[str]) -> dict[str, str]:
        """Why the engine cannot place these units (those it published a reason for, at their hash)."""
        found = await Reasons(self.registry).read(names)
        records = await self.registry.get_units(names) if found else {}
        return {
            name: entry.reason for name, entry in found.items()
            if name in records and records[name].hash == entry.hash
        }

    async def _unplaceable(self, goals: Sequence[Goal], pending: Mapping[str, Goal]) -> None:
        """Raise UnitUnplaceable once the engine publishes that a pending goal's unit cannot be placed."""
        reasons = Reasons(self.registry)
        names = [goal.name for goal in goals]
        async for _ in changes(self, ["unplaceable"]):
            found = {str(name): entry for name, entry in (await reasons.read(names)).items()}
            stuck = [(goal, found[goal.name].reason) for goal in goals
                     if goal.name in pending and goal.name in found and found[goal.name].hash == goal.hash]
            if stuck:
                raise UnitUnplaceable(stuck)
        await asyncio.Event().wait()  # the registry closed: the state wait decides

    async def _wait_states(
        self,
        pending: dict[str, Goal],
        met: dict[str, UnitState | None],
        total: int,
        budget: float | None,
        progress: Callable[[int, int, dict[str, UnitState | None]], None] | None,
    ) -> dict[str, UnitState | None]:
        latest: dict[str, list[UnitState]] = {}
        stream = self.registry.watch_unit_states(sorted(pending))
        try:
            async with asyncio.timeout(budget):
                async for states in stream:
                    latest = states_by_name(states)
                    failures = []
                    for name in sorted(pending):
                        found = _reached(pending[name], latest.get(name, ()))
                        if found is not False:
                            met[name] = found if isinstance(found, UnitState) else None
                            del pending[name]
                            continue
                        failed = _failed(pending[name], latest.get(name, ()))
                        if failed is not None:
                            failures.append((pending[name], failed))
                    if progress is not None:
                        progress(len(met), total, met)
                    if failures:
                        raise UnitFailed(failures)
                    if not pending:
                        break
        except TimeoutError:
            first = min(pending)
            raise WaitTimeout(pending[first], latest.get(first, ())) from None
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        return met


async def _together(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both results, awaited at the same time (etcd serves one read while this process decodes the other).
    When one fails the other is cancelled and gone before the failure is raised; so is a cancellation."""
    one, other = await all_or_first_failure(first, second)
    return cast(A, one), cast(B, other)


def _moved(record: Rescheduled | None, unit_hash: str) -> str:
    return record.reason if record is not None and record.hash == unit_hash else ""


def _description(body: str) -> str:
    if not body:
        return ""
    from fleetd.unitfile.unit import UnitFile  # noqa: PLC0415 (only list-unit-files --fields desc needs it)

    try:
        return UnitFile.from_text(body).description
    except FleetError:
        return ""


# Watching for live views (``list-units --watch``, progress lines) ---------------------------------------
# Module-level functions on a FleetClient so that this block stays apart from the code above.

WatchArea = Literal[
    "machines", "states", "units", "targets", "schedule", "globals", "unplaceable", "cordons"
]


async def changes(client: FleetClient, areas: Sequence[WatchArea]) -> AsyncIterator[None]:
    """Wake-ups for a live view: once now, then after every batch of changes to keys in ``areas`` of the
    registry (``states`` is ``states/``, ...). Level-triggered: the caller re-reads what it shows after each
    wake-up. One watch (on the area, or on the whole registry prefix for several); a compacted revision
    restarts it from the current revision, with one more wake-up. Ends when the registry closes."""
    registry = client.registry
    prefixes = tuple(str(getattr(registry.keys, area)) for area in areas)
    watched = prefixes[0] if len(prefixes) == 1 else registry.keys.prefix
    while True:
        revision = (await registry.kv.range(watched, limit=1)).revision
        yield
        events = registry.kv.watch(watched, revision + 1)
        try:
            async for batch in events:
                if any(event.kv.key.startswith(prefixes) for event in batch):
                    yield
        except WatchCompacted:
            continue
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return


def unit_state_feed(client: FleetClient, names: Sequence[str]) -> AsyncIterator[tuple[UnitState, ...]]:
    """The named units' published states: as read now, then again after every change (one watch)."""
    return client.registry.watch_unit_states(names)
