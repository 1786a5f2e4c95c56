"""Per-unit records the engine leader publishes, and fleetctl reads (``start``, ``status``, ``list-units``):

- ``unplaceable/<unit>`` = {hash, reason}: why the engine found no machine for a unit (``Reasons``);
- ``reschedules/<unit>`` = {hash, attempts, last, machines, reason}: how often a failed unit with
  Reschedule=on-failure was moved (``Reschedules``; written before the plan that moves the unit, so a new
  leader continues the count and never counts short).

Both are written in Txns guarded by the leadership, only what changed. A record is trusted only for the
unit's current hash: a unit replaced since the engine last looked is not judged by the old text. Entries that
do not decode are skipped and reported once, like every record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

from fleetd.errors import CASConflict
from fleetd.model import Rescheduled, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Unplaceable
from fleetd.registry.kv import Compare, Delete, KeyValue, Op, Put
from fleetd.registry.pages import range_paged
from fleetd.registry.registry import Registry
from fleetd.registry.txn import Group, pack

__all__ = ["Reasons", "Reschedules", "UnitRecords"]

_BY_NAME = 128  # at most this many names are read key by key; more, and the prefix is read in pages

T = TypeVar("T")


class UnitRecords(Generic[T]):
    """Records of type ``T`` at ``<prefix><unit>``, encoded and decoded by the given functions."""

    def __init__(
        self,
        registry: Registry,
        prefix: str,
        encode: Callable[[T], str],
        decode: Callable[[str, str], T],
    ) -> None:
        self._registry = registry
        self._keys = registry.keys
        self._prefix = prefix
        self._encode = encode
        self._decode = decode

    async def read(self, names: Sequence[str] | None = None) -> dict[UnitName, T]:
        """The published records (of ``names`` only, when given)."""
        prefix = self._prefix
        if names is not None and len(names) <= _BY_NAME:
            found = await self._registry.get_many([prefix + name for name in names])
            kvs: Sequence[KeyValue] = list(found.values())
        else:
            kvs = (await range_paged(self._registry.kv, prefix)).kvs
        wanted = None if names is None else set(names)
        out: dict[UnitName, T] = {}
        for kv in kvs:
            try:
                name = self._keys.unit_name(kv.key, prefix)
                entry = self._decode(kv.key, kv.value)
            except BadRecord as exc:
                self._registry.skip(exc, kv.mod_revision)
                continue
            if wanted is None or name in wanted:
                out[name] = entry
        return out

    async def publish(self, changes: Mapping[UnitName, T | None], leadership: Compare) -> None:
        """Write (or, for None, delete) records in Txns guarded by ``leadership``; CASConflict if lost."""
        groups = [Group(name, (self._op(name, entry),)) for name, entry in sorted(changes.items())]
        for batch in pack(groups, (leadership,)):
            if not (await self._registry.kv.txn(batch.compares, batch.ops)).succeeded:
                lost = f"engine leadership lost while publishing {self._prefix}"
                raise CASConflict(f"{lost} ({leadership.key})")

    def _op(self, name: UnitName, entry: T | None) -> Op:
        key = self._prefix + name
        return Delete(key) if entry is None else Put(key, self._encode(entry))


class Reasons(UnitRecords[Unplaceable]):
    def __init__(self, registry: Registry) -> None:
        super().__init__(registry, registry.keys.unplaceable, ks.encode_unplaceable, ks.decode_unplaceable)


class Reschedules(UnitRecords[Rescheduled]):
    def __init__(self, registry: Registry) -> None:
        super().__init__(
            registry, registry.keys.reschedules, records.encode_rescheduled, records.decode_rescheduled
        )
