"""Cordoned machines: ``cordons/<machine-id>`` = {reason}, written by ``fleetctl drain`` and deleted by
``fleetctl uncordon``; the engine leader mirrors the prefix and plans around it (see
``fleetd.engine.plan``). Entries that do not decode are skipped and reported once, like every record.
"""

from __future__ import annotations

from fleetd.model import MachineID
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, Cordon
from fleetd.registry.pages import range_paged
from fleetd.registry.registry import Registry

__all__ = ["Cordons"]


class Cordons:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._keys = registry.keys

    async def read(self) -> dict[MachineID, Cordon]:
        """Every cordoned machine (live or not) with its note."""
        out: dict[MachineID, Cordon] = {}
        for kv in (await range_paged(self._registry.kv, self._keys.cordons)).kvs:
            try:
                machine_id = self._keys.cordoned_machine(kv.key)
                out[machine_id] = ks.decode_cordon(kv.key, kv.value)
            except BadRecord as exc:
                self._registry.skip(exc, kv.mod_revision)
        return out

    async def cordon(self, machine_id: str, reason: str = "") -> None:
        await self._registry.kv.put(self._keys.cordon(machine_id), ks.encode_cordon(Cordon(reason)))

    async def uncordon(self, machine_id: str) -> bool:
        """Delete the machine's cordon; False when it had none."""
        return bool(await self._registry.kv.delete(self._keys.cordon(machine_id)))
