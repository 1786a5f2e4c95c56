"""Registry operations on the KV port: what fleetctl, the agent and the engine do to the keyspace.

Every multi-key change goes through the one Txn packer (``fleetd.registry.txn``): Txns of at most
``MAX_TXN_OPS`` compares plus ops and ``MAX_TXN_BYTES`` of keys and values; a larger change is split into
several, each atomic per unit (per action, per body), and a unit too large for one Txn is refused before
anything is written (``TxnTooLarge``). Reads of many keys by name go through Txns of Gets packed the same way;
every read of a prefix is paginated (``range_paged``), so no request or reply grows with the cluster.

Readers skip a record that does not decode (``BadRecord``: a malformed value, or a key whose name is not a
valid unit name, machine ID or hash) with one WARNING naming the key, once per (key, mod revision) for the
life of the Registry; they never raise for stored data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fleetd.cancel import all_or_first_failure
from fleetd.errors import CASConflict, NotFound, RegistryError
from fleetd.metadata import RESET, MetadataChange, applied, merged
from fleetd.model import (
    Action,
    EnginePlan,
    MachineID,
    MachineState,
    Schedule,
    TargetState,
    UnitName,
    UnitState,
    Unschedule,
)
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Keyspace, ReportOnce, UnitRecord
from fleetd.registry.kv import (
    KV,
    MAX_TXN_OPS,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KeyValue,
    Op,
    Put,
    RangeResult,
)
from fleetd.registry.pages import range_paged, range_pages
from fleetd.registry.snapshot import ScheduledUnit
from fleetd.registry.txn import Batch, Group, pack

__all__ = ["DuplicateMachine", "Registry", "UnitRecord"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SET_TARGET_ATTEMPTS = 5
_IN_FLIGHT = 8  # requests of one bulk change or read sent concurrently
_BODIES_PER_READ = 16  # bodies per Txn of Gets: a reply holds at most 16 MiB of bodies within the body policy


_PACK_ON_LOOP = 1000  # actions packed on the event loop; more are packed in a worker thread
FAILED_STATE = "failed"  # systemd's ActiveState of a unit that failed


class DuplicateMachine(RegistryError):
    """Another live agent holds this machine ID's record."""

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        super().__init__(f"machine {machine_id} is already registered (duplicate /etc/machine-id?)")


@dataclass(frozen=True, slots=True)
class _Versioned:
    record: UnitRecord
    mod_revision: int  # of units/<name>


async def _limited(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``calls``, at most ``_IN_FLIGHT`` at once (etcd commits concurrent requests together)."""
    limit = asyncio.Semaphore(_IN_FLIGHT)

    async def one(call: Awaitable[T]) -> T:
        async with limit:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


class Registry:
    """The fleet registry over a KV (real etcd or MemoryKV), under one key prefix."""

    def __init__(self, kv: KV, prefix: str = ks.DEFAULT_PREFIX) -> None:
        self.kv = kv
        self.keys = Keyspace(prefix)
        self._reported = ReportOnce()

    def skip(self, exc: BadRecord, mod_revision: int) -> None:
        """Log a record that does not decode: one WARNING per (key, mod revision)."""
        if self._reported.first(exc.key, mod_revision):
            logger.warning("skipping %s", exc)

    # Schema ---------------------------------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the schema key if absent; RegistryError when the stored version is not ours."""
        key = self.keys.schema
        result = await self.kv.txn(
            [Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, 0)],
            [Put(key, ks.SCHEMA_VERSION)],
            [Get(key)],
        )
        if result.succeeded:
            return
        found = result.responses[0][0].value if result.responses and result.responses[0] else ""
        if found != ks.SCHEMA_VERSION:
            raise RegistryError(
                f"registry schema version {ks.show(repr(found))} at {key} is not supported (this fleet uses"
                f" {ks.SCHEMA_VERSION!r})"
            )

    # Machines -------------------------------------------------------------------------------------------

    async def register_machine(self, state: MachineState, lease: int) -> None:
        """Create (or refresh, under the same lease) this machine's record.

        DuplicateMachine when another live lease holds it; a record left by a dead lease is taken over."""
        key = self.keys.machine(state.id)
        value = ks.encode_machine(state)
        for _ in range(_SET_TARGET_ATTEMPTS):
            result = await self.kv.txn(
                [Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, 0)], [Put(key, value, lease)], [Get(key)]
            )
            if result.succeeded:
                return
            existing = result.responses[0][0] if result.responses and result.responses[0] else None
            if existing is None:
                continue
            if existing.lease in (lease, 0) or await self.kv.time_to_live(existing.lease) <= 0:
                guard = Compare(key, CompareTarget.MOD, CompareOp.EQUAL, existing.mod_revision)
                if existing.lease == lease and existing.value == value:
                    return
                if (await self.kv.txn([guard], [Put(key, value, lease)])).succeeded:
                    return
                continue
            raise DuplicateMachine(state.id)
        raise CASConflict(f"machine {state.id}: record kept changing while registering")

    async def list_machines(self) -> tuple[MachineState, ...]:
        """Live machines sorted by ID, their live metadata merged over the configured one (two ranges, at
        one revision)."""
        result = await range_paged(self.kv, self.keys.machines)
        overrides = await self.read_metadata(result.revision)
        machines = []
        for kv in result.kvs:
            try:
                machine = ks.decode_machine(kv.key, kv.value)
                if kv.key != self.keys.machine(machine.id):
                    raise BadRecord(kv.key, f"record names machine {machine.id}")
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
                continue
            machines.append(merged(machine, overrides.get(machine.id, {})))
        return tuple(sorted(machines, key=lambda m: m.id))

    async def read_metadata(self, revision: int = 0) -> dict[MachineID, dict[str, str]]:
        """Live metadata overrides by machine (live or not); bad entries are skipped (see the header)."""
        out: dict[MachineID, dict[str, str]] = {}
        for kv in (await range_paged(self.kv, self.keys.metadata, revision=revision)).kvs:
            try:
                out[self.keys.metadata_machine(kv.key)] = ks.decode_metadata(kv.key, kv.value)
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    async def patch_metadata(self, changes: Sequence[MetadataChange]) -> None:
        """Apply live metadata changes, in order, atomically per machine (each machine's write compares on
        the overrides it read; a concurrent change is re-read and retried). An entry left with no
        overrides is deleted. A stored entry that does not decode is replaced."""
        by_machine: dict[MachineID, list[MetadataChange]] = {}
        for change in changes:
            by_machine.setdefault(change.machine_id, []).append(change)
        pending = dict(by_machine)
        for _ in range(_SET_TARGET_ATTEMPTS):
            found = await self.get_many([self.keys.machine_metadata(m) for m in sorted(pending)])
            groups: list[Group[MachineID]] = []
            for machine_id, machine_changes in sorted(pending.items()):
                key = self.keys.machine_metadata(machine_id)
                kv = found.get(key)
                current: dict[str, str] = {}
                if kv is not None:
                    try:
                        current = ks.decode_metadata(kv.key, kv.value)
                    except BadRecord as exc:
                        self.skip(exc, kv.mod_revision)
                new = applied(current, machine_changes)
                op: Op = Put(key, ks.encode_metadata(new)) if new else Delete(key)
                guard = (
                    Compare(key, CompareTarget.MOD, CompareOp.EQUAL, kv.mod_revision) if kv is not None
                    else Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, 0)
                )
                groups.append(Group(machine_id, (op,), (guard,)))
            for batch in pack(groups):
                if (await self.kv.txn(batch.compares, batch.ops)).succeeded:
                    for machine_id in batch.tags:
                        pending.pop(machine_id)
            if not pending:
                return
        raise CASConflict(f"metadata kept changing on machines {', '.join(sorted(pending))}")

    async def reset_metadata(self, machine_id: MachineID, keys: Sequence[str] | None = None) -> None:
        """Drop live metadata overrides of one machine, so its configured values hold again: ``keys``, or
        with None every override (the entry is deleted, whatever it holds)."""
        if keys is None:
            await self.kv.delete(self.keys.machine_metadata(machine_id))
        else:
            await self.patch_metadata([MetadataChange(machine_id, key, RESET) for key in keys])

    async def remove_machine(self, machine_id: str) -> None:
        await self.kv.delete(self.keys.machine(machine_id))

    # Units ----------------------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str], per_txn: int = MAX_TXN_OPS) -> dict[str, KeyValue]:
        """Read many single keys with packed Txns of Gets (at most ``per_txn`` each, a few at once); absent
        keys are absent from the result."""
        batches = pack((Group(k, (Get(k),)) for k in keys), max_ops=per_txn)
        results = await _limited(self.kv.txn([], batch.ops) for batch in batches)
        return {kv.key: kv for result in results for response in result.responses for kv in response}

    def _decode_unit(self, name: UnitName, unit: KeyValue, target: KeyValue | None) -> UnitRecord:
        state = ks.decode_target(target.key, target.value) if target else TargetState.INACTIVE
        return ks.decode_unit(unit.key, unit.value, name, state)

    async def _versioned_units(self, names: Sequence[str]) -> dict[UnitName, _Versioned]:
        keys = [k for n in names for k in (self.keys.unit(n), self.keys.target(n))]
        found = await self.get_many(keys)
        out: dict[UnitName, _Versioned] = {}
        for name in names:
            unit = found.get(self.keys.unit(name))
            if unit is None:
                continue
            target = found.get(self.keys.target(name))
            try:
                record = self._decode_unit(self.keys.unit_name(unit.key, self.keys.units), unit, target)
            except BadRecord as exc:
                self.skip(exc, target.mod_revision if target and exc.key == target.key else unit.mod_revision)
                continue
            out[UnitName(name)] = _Versioned(record, unit.mod_revision)
        return out

    async def get_unit(self, name: str) -> UnitRecord | None:
        """The unit, or None when absent or its stored record is malformed (skipped, see the header)."""
        found = await self._versioned_units([name])
        entry = found.get(UnitName(name))
        return entry.record if entry else None

    async def get_units(self, names: Sequence[str]) -> Mapping[UnitName, UnitRecord]:
        """The named units that exist (absent and malformed ones are left out)."""
        return {name: v.record for name, v in (await self._versioned_units(names)).items()}

    async def list_units(self) -> tuple[UnitRecord, ...]:
        """Every unit sorted by name; malformed records are logged and left out."""
        units = await range_paged(self.kv, self.keys.units)
        targets = await range_paged(self.kv, self.keys.targets, revision=units.revision)
        by_key = {kv.key: kv for kv in targets.kvs}
        records = []
        for kv in units.kvs:
            target = None
            try:
                name = self.keys.unit_name(kv.key, self.keys.units)
                target = by_key.get(self.keys.target(name))
                records.append(self._decode_unit(name, kv, target))
            except BadRecord as exc:
                self.skip(exc, target.mod_revision if target and exc.key == target.key else kv.mod_revision)
        return tuple(records)

    async def get_body(self, unit_hash: str) -> str | None:
        """The body's text; None when absent or not text (skipped, see the header)."""
        return (await self.get_bodies([unit_hash])).get(unit_hash)

    async def get_bodies(self, hashes: Iterable[str]) -> Mapping[str, str]:
        """Texts by hash (absent ones and bodies that are not UTF-8 left out), read in batches."""
        unique = sorted(set(hashes))
        found = await self.get_many([self.keys.body(h) for h in unique], _BODIES_PER_READ)
        out: dict[str, str] = {}
        for unit_hash in unique:
            kv = found.get(self.keys.body(unit_hash))
            if kv is None:
                continue
            try:
                out[unit_hash] = ks.decode_body(kv.key, kv.value)
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    def _unit_ops(self, record: UnitRecord, text: str) -> tuple[Op, ...]:
        ops: list[Op] = [
            Put(self.keys.unit(record.name), ks.encode_unit(record)),
            Put(self.keys.body(record.hash), text),
            Put(self.keys.target(record.name), record.target_state.value),
        ]
        if record.is_global:
            ops.append(Put(self.keys.global_unit(record.name), ks.encode_global(record)))
        else:
            ops.append(Delete(self.keys.global_unit(record.name)))
        return tuple(ops)

    async def put_units(self, units: Sequence[tuple[UnitRecord, str]]) -> int:
        """Create or replace units with their bodies (always written, so a concurrent body GC fails its
        compare). Each unit is written atomically; a large change is split into Txns sent a few at a time.
        Returns the highest revision written (0 when there was nothing to do). TxnTooLarge (nothing
        written) when one unit does not fit in a Txn."""
        texts: dict[str, str] = {}  # one text per hash (the first given), so units sharing it put one body
        for record, text in units:
            texts.setdefault(record.hash, text)
        return await self._write_all(Group(r.name, self._unit_ops(r, texts[r.hash])) for r, _ in units)

    async def _write_all(self, groups: Iterable[Group[str]]) -> int:
        """Unguarded packed Txns, a few at once; the highest revision written (0: nothing to write)."""
        results = await _limited(self.kv.txn([], batch.ops) for batch in pack(groups))
        return max((r.revision for r in results), default=0)

    async def set_target_states(self, targets: Mapping[str, TargetState]) -> int:
        """Set target states (and the globals/ entry of global units); NotFound for an unknown unit.

        Each unit's write compares on the ``units/`` record it was read with, so a concurrent replace or
        destroy is not overwritten with stale data: the change is re-read and retried.
        """
        pending = dict(targets)
        revision = 0
        stopped: list[str] = []
        for _ in range(_SET_TARGET_ATTEMPTS):
            current = await self._versioned_units(sorted(pending))
            for name in sorted(pending):
                if UnitName(name) not in current:
                    raise NotFound("unit", name)
            groups: list[Group[str]] = []
            for name, entry in current.items():
                record = UnitRecord(name, entry.record.hash, entry.record.is_global, pending[name])
                ops: list[Op] = [Put(self.keys.target(name), record.target_state.value)]
                if record.is_global:
                    ops.append(Put(self.keys.global_unit(name), ks.encode_global(record)))
                guard = Compare(self.keys.unit(name), CompareTarget.MOD, CompareOp.EQUAL, entry.mod_revision)
                groups.append(Group(name, tuple(ops), (guard,)))
            for batch in pack(groups):
                result = await self.kv.txn(batch.compares, batch.ops)
                if result.succeeded:
                    revision = result.revision
                    for name in batch.tags:
                        global_ = current[UnitName(name)].record.is_global
                        if global_ and pending[name] is not TargetState.LAUNCHED:
                            stopped.append(name)
                        pending.pop(name)
            if not pending:
                await self.drop_pins(stopped)  # a stopped Global unit is no longer rolling: unpin it
                return revision
        raise CASConflict(f"units kept changing while setting target states: {', '.join(sorted(pending))}")

    async def destroy_units(self, names: Iterable[str]) -> int:
        """Delete units (record, target, global entry) and the hash pins of global ones; the engine then
        cleans their schedules and bodies."""
        keys = self.keys
        names = list(names)
        pinned = await self.get_many([keys.global_unit(n) for n in names])
        revision = await self._write_all(
            Group(n, (Delete(keys.unit(n)), Delete(keys.target(n)), Delete(keys.global_unit(n))))
            for n in names
        )
        await self.drop_pins([n for n in names if keys.global_unit(n) in pinned])
        return revision

    # Hash pins of Global units (schedule/<machine-id>/pin/<unit>) -----------------------------------------

    async def machine_ids(self) -> list[MachineID]:
        """The IDs of the registered machines (bad keys skipped)."""
        out = []
        for kv in (await range_paged(self.kv, self.keys.machines)).kvs:
            try:
                out.append(self.keys.machine_id(kv.key))
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    async def get_pins(self, name: str, machine_ids: Iterable[str]) -> dict[MachineID, str]:
        """The hash ``name`` is pinned to on each of ``machine_ids`` that has a (well-formed) pin."""
        found = await self.get_many([self.keys.pin(m, name) for m in machine_ids])
        out: dict[MachineID, str] = {}
        for kv in found.values():
            try:
                machine_id, _ = self.keys.parse_pin(kv.key)
                out[machine_id] = ks.decode_pin(kv.key, kv.value)
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    async def set_pins(self, name: str, machine_ids: Iterable[str], unit_hash: str) -> int:
        """Pin ``name`` to ``unit_hash`` on each of ``machine_ids`` (packed Txns)."""
        value = ks.encode_pin(unit_hash)
        return await self._write_all(Group(name, (Put(self.keys.pin(m, name), value),)) for m in machine_ids)

    async def unpin(self, name: str, machine_ids: Iterable[str]) -> int:
        """Remove the pins of ``name`` on ``machine_ids`` (packed Txns)."""
        return await self._write_all(Group(name, (Delete(self.keys.pin(m, name)),)) for m in machine_ids)

    async def drop_pins(self, names: Sequence[str]) -> None:
        """Remove the pins of the global units ``names`` on every registered machine."""
        if names:
            machine_ids = await self.machine_ids()
            for name in names:
                await self.unpin(name, machine_ids)

    # Schedule -------------------------------------------------------------------------------------------

    async def list_schedule(self) -> Mapping[UnitName, list[ScheduledUnit]]:
        """Where each unit is scheduled, over all machines (one range); malformed entries are logged."""
        result = await range_paged(self.kv, self.keys.schedules)
        out: dict[UnitName, list[ScheduledUnit]] = {}
        for kv in result.kvs:
            if self.keys.is_pin(kv.key):
                continue
            try:
                machine_id, name = self.keys.parse_scheduled(kv.key)
                out.setdefault(name, []).append(ks.decode_schedule(kv.key, kv.value, machine_id))
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    async def machine_schedule(self, machine_id: str) -> Mapping[UnitName, ScheduledUnit]:
        prefix = self.keys.schedule(machine_id)
        result = await range_paged(self.kv, prefix)
        out: dict[UnitName, ScheduledUnit] = {}
        for kv in result.kvs:
            if self.keys.is_pin(kv.key):
                continue
            try:
                name = self.keys.unit_name(kv.key, prefix)
                out[name] = ks.decode_schedule(kv.key, kv.value, MachineID(machine_id))
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    # Unit states ----------------------------------------------------------------------------------------

    def _decode_states(self, kvs: Iterable[KeyValue]) -> dict[str, UnitState]:
        out: dict[str, UnitState] = {}
        decode = ks.unit_state_decoder(self.keys)
        for kv in kvs:
            try:
                out[kv.key] = decode(kv.key, kv.value)
            except BadRecord as exc:
                self.skip(exc, kv.mod_revision)
        return out

    async def _read_states(self, names: Sequence[str] | None) -> tuple[dict[str, UnitState], int]:
        """States of the named units (or all) and the revision they were read at: one paged range per
        unit's prefix, all at the first one's revision, for a few units; the whole ``states/`` paged for
        more (fewer requests than one range per unit then)."""
        if names is not None and not names:
            return {}, 0
        if names is not None and len(names) <= MAX_TXN_OPS:
            first, *rest = sorted(set(names))
            read = await range_paged(self.kv, self.keys.unit_states(first))
            pages: list[RangeResult] = [read]
            pages += await _limited(
                range_paged(self.kv, self.keys.unit_states(n), revision=read.revision) for n in rest
            )
            return self._decode_states(kv for page in pages for kv in page.kvs), read.revision
        states: dict[str, UnitState] = {}
        revision = 0
        paged = range_pages(self.kv, self.keys.states)  # each decoded while the next one is read
        async with contextlib.aclosing(paged):
            async for page in paged:
                states.update(self._decode_states(page.kvs))
                revision = page.revision
        if names is not None:
            wanted = set(names)
            states = {k: s for k, s in states.items() if s.name in wanted}
        return states, revision

    async def list_unit_states(self, names: Sequence[str] | None = None) -> tuple[UnitState, ...]:
        """Published unit states (all, or of the named units), sorted by (name, machine)."""
        states, _ = await self._read_states(names)
        return _sorted_states(states.values())

    async def publish_state(self, state: UnitState, lease: int) -> int:
        return await self.publish_states([state], lease)

    async def publish_states(
        self,
        states: Iterable[UnitState],
        lease: int,
        removed: Iterable[tuple[str, str]] = (),
        unfailed: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Write unit states on ``lease`` and delete the ``removed`` (name, machine) states, in as few packed
        Txns as the limits allow, one after the other. Returns the last revision (0: nothing to do).

        A state systemd reports failed also puts ``failed/<unit>/<machine>`` (the engine reschedules units
        with Reschedule=on-failure from those few keys rather than from every state); ``unfailed`` are the
        (name, machine) markers to delete: units published failed before and no longer failed or run."""
        groups: list[Group[str]] = [
            Group(s.name, (Put(key, ks.encode_unit_state(s), lease), *self._failure_ops(s, lease)))
            for s in states
            for key in [self.keys.unit_state(s.name, s.machine_id)]
        ]
        groups += [Group(name, (Delete(self.keys.unit_state(name, m)),)) for name, m in removed]
        groups += [Group(name, (Delete(self.keys.failed_unit(name, m)),)) for name, m in unfailed]
        revision = 0
        for batch in pack(groups):
            revision = (await self.kv.txn([], batch.ops)).revision
        return revision

    def _failure_ops(self, state: UnitState, lease: int) -> tuple[Op, ...]:
        if state.active_state != FAILED_STATE:
            return ()
        key = self.keys.failed_unit(state.name, state.machine_id)
        return (Put(key, records.encode_failed(state.hash), lease),)

    async def remove_state(self, name: str, machine_id: str) -> None:
        await self.kv.delete(self.keys.unit_state(name, machine_id))

    async def watch_unit_states(self, names: Sequence[str]) -> AsyncIterator[tuple[UnitState, ...]]:
        """The current states of the named units: first as read, then again after every change (one watch)."""
        wanted = set(names)
        states, revision = await self._read_states(list(names))
        yield _sorted_states(states.values())
        prefix = self.keys.unit_states(names[0]) if len(wanted) == 1 else self.keys.states
        events = self.kv.watch(prefix, revision + 1)
        try:
            async for batch in events:
                changed = False
                for event in batch:
                    try:
                        name, _machine = self.keys.parse_unit_state(event.kv.key)
                    except BadRecord:
                        continue
                    if name not in wanted:
                        continue
                    changed = True
                    if event.type is EventType.DELETE:
                        states.pop(event.kv.key, None)
                    else:
                        states.pop(event.kv.key, None)
                        states.update(self._decode_states([event.kv]))
                if changed:
                    yield _sorted_states(states.values())
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    # Engine ---------------------------------------------------------------------------------------------

    def _action_op(self, action: Action) -> Op:
        key = self.keys.scheduled(action.machine_id, action.unit)
        if isinstance(action, Schedule):
            return Put(key, ks.encode_schedule(action.hash, action.state))
        return Delete(key)

    async def apply_plan(self, plan: EnginePlan, leadership: Compare) -> int:
        """Write the plan's actions in Txns guarded by ``leadership``; CASConflict when it no longer holds.

        Every removal is written before any placement (a unit moved is never scheduled twice, a machine
        sheds a conflicting unit before it gets the new one); within each of the two, up to ``_IN_FLIGHT``
        Txns are in flight, so etcd commits them together (one after another, a first pass of 100,000
        placements is 800 round trips, each waiting for its own commit). Returns the highest revision
        written (0 for an empty plan). Batches already written stay written: the caller re-plans from fresh
        data after a conflict.
        """

        def packed() -> list[list[Batch[Action]]]:
            removals = [a for a in plan.actions if isinstance(a, Unschedule)]
            placements = [a for a in plan.actions if not isinstance(a, Unschedule)]
            return [
                list(pack((Group(a, (self._action_op(a),)) for a in phase), (leadership,)))
                for phase in (removals, placements)
                if phase
            ]

        # packing a first pass's 100,000 actions takes long enough to starve keep-alives: off the loop
        phases = await asyncio.to_thread(packed) if len(plan.actions) > _PACK_ON_LOOP else packed()
        revision = 0
        for batches in phases:
            revision = max(revision, await self._write_batches(batches, leadership))
        return revision

    async def _write_batches(self, batches: Sequence[Batch[Action]], leadership: Compare) -> int:
        """Write ``batches``, ``_IN_FLIGHT`` at a time; stop at the first that fails its compares."""
        pending = iter(batches)
        revision = 0
        lost = False

        async def writer() -> None:
            nonlocal revision, lost
            for batch in pending:  # the writers share one iterator: each batch is written once
                if lost:
                    return
                result = await self.kv.txn(batch.compares, batch.ops)
                if not result.succeeded:
                    lost = True
                    return
                revision = max(revision, result.revision)

        await all_or_first_failure(*(writer() for _ in range(min(_IN_FLIGHT, len(batches)))))
        if lost:
            raise CASConflict(f"engine leadership lost while applying a plan ({leadership.key} changed)")
        return revision

    async def collect_bodies(self, candidates: Mapping[str, int], leadership: Compare) -> int:
        """Delete unreferenced bodies, each guarded by the mod revision it was seen at (hash -> revision),
        so a body re-put by a concurrent submit survives. Returns how many were deleted."""
        groups = [self._body_deletion(i, h, rev) for i, (h, rev) in enumerate(sorted(candidates.items()))]
        deleted = 0
        for batch in pack(groups, (leadership,)):
            if await self._holds(batch):
                deleted += len(batch.tags)
            elif len(batch.tags) > 1:
                for i in batch.tags:  # one changed: retry them one by one so the others still go
                    [alone] = pack([groups[i]], (leadership,))
                    deleted += await self._holds(alone)
        return deleted

    def _body_deletion(self, index: int, unit_hash: str, mod_revision: int) -> Group[int]:
        key = self.keys.body(unit_hash)
        return Group(index, (Delete(key),), (Compare(key, CompareTarget.MOD, CompareOp.EQUAL, mod_revision),))

    async def _holds(self, batch: Batch[int]) -> bool:
        return (await self.kv.txn(batch.compares, batch.ops)).succeeded


def _sorted_states(states: Iterable[UnitState]) -> tuple[UnitState, ...]:
    return tuple(sorted(states, key=lambda s: (s.name, s.machine_id)))
