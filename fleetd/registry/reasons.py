"""Why units cannot be placed: ``unplaceable/<unit>`` = {hash, reason}, written by the engine leader (in Txns
guarded by its leadership, only what changed) and read by fleetctl (``start``, ``status``, ``list-units``).

A reason is trusted only for the unit's current hash: a unit replaced since the engine last looked is not
judged by the old text. Entries that do not decode are skipped and reported once, like every record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetd.errors import CASConflict
from fleetd.model import UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, Unplaceable
from fleetd.registry.kv import Compare, Delete, KeyValue, Op, Put, range_paged
from fleetd.registry.registry import Registry
from fleetd.registry.txn import Group, pack

__all__ = ["Reasons"]

_BY_NAME = 128  # at most this many names are read key by key; more, and the prefix is read in pages


class Reasons:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._keys = registry.keys

    async def read(self, names: Sequence[str] | None = None) -> dict[UnitName, Unplaceable]:
        """The published reasons (of ``names`` only, when given)."""
        prefix = self._keys.unplaceable
        if names is not None and len(names) <= _BY_NAME:
            found = await self._registry.get_many([self._keys.unplaceable_unit(name) for name in names])
            kvs: Sequence[KeyValue] = list(found.values())
        else:
            kvs = (await range_paged(self._registry.kv, prefix)).kvs
        wanted = None if names is None else set(names)
        out: dict[UnitName, Unplaceable] = {}
        for kv in kvs:
            try:
                name = self._keys.unit_name(kv.key, prefix)
                entry = ks.decode_unplaceable(kv.key, kv.value)
            except BadRecord as exc:
                self._registry.skip(exc, kv.mod_revision)
                continue
            if wanted is None or name in wanted:
                out[name] = entry
        return out

    async def publish(self, changes: Mapping[UnitName, Unplaceable | None], leadership: Compare) -> None:
        """Write (or, for None, delete) reasons in Txns guarded by ``leadership``; CASConflict if lost."""
        groups = [Group(name, (self._op(name, entry),)) for name, entry in sorted(changes.items())]
        for batch in pack(groups, (leadership,)):
            if not (await self._registry.kv.txn(batch.compares, batch.ops)).succeeded:
                raise CASConflict(f"engine leadership lost while publishing reasons ({leadership.key})")

    def _op(self, name: UnitName, entry: Unplaceable | None) -> Op:
        key = self._keys.unplaceable_unit(name)
        return Delete(key) if entry is None else Put(key, ks.encode_unplaceable(entry))
