"""This machine's live metadata, as its agent reads it: the overrides in ``metadata/<own-id>`` (fleetctl
set-metadata, ``PATCH /fleet/v1/machines``), merged over the configured metadata with
``fleetd.metadata.merged`` (as the engine and list-machines merge them), so Global units' ``MachineMetadata``
follows live metadata.

The key is read, not watched, and only while it matters: while a Global unit this agent may run has
``MachineMetadata`` (``needed``, set by the agent on every pass), one Get every ``interval`` seconds and one
before the first pass that needs it; otherwise none, so most clusters pay nothing for it. A standby fleetd
holds three watches (its schedule, ``globals/``, the engine's leader key) and a fourth per machine would grow
etcd's watchers with the cluster; no prefix covers both this key and the agent's schedule without covering
every machine's. A change therefore reaches Global units within ``interval`` seconds.

The stored value is hostile input: an entry that does not decode is ignored (the configured metadata holds,
as in the engine's snapshot), reported with one WARNING per (key, mod revision).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from fleetd.errors import RegistryError
from fleetd.metadata import merged
from fleetd.model import MachineID, MachineState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, ReportOnce
from fleetd.registry.kv import KV, KeyValue
from fleetd.retry import Sleep

__all__ = ["METADATA_INTERVAL", "OwnMetadata", "overrides_of"]

logger = logging.getLogger(__name__)

METADATA_INTERVAL = 10.0  # seconds between reads of this machine's live metadata


def overrides_of(kv: KeyValue | None) -> dict[str, str] | BadRecord:
    """The overrides stored in ``kv`` (none when the key is absent), or why they do not decode."""
    if kv is None:
        return {}
    try:
        return ks.decode_metadata(kv.key, kv.value)
    except BadRecord as exc:
        return exc


def _shown(overrides: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" if v else f"-{k}" for k, v in sorted(overrides.items())) or "-"


class OwnMetadata:
    """The live overrides of one machine; ``refresh`` reads them, ``machine`` merges them."""

    def __init__(
        self, kv: KV, key: str, machine_id: MachineID, *, interval: float = METADATA_INTERVAL
    ) -> None:
        self._kv = kv
        self._key = key
        self._machine_id = machine_id
        self.interval = interval
        self.overrides: Mapping[str, str] = {}
        self.ready = False  # read since it was last needed
        self.needed = False  # a Global unit with MachineMetadata is wanted (set by the agent)
        self._reported = ReportOnce()
        self._failing = False

    def machine(self, configured: MachineState) -> MachineState:
        """``configured`` with the live overrides last read."""
        return merged(configured, self.overrides)

    async def refresh(self) -> bool:
        """Read the key once; True when the overrides changed. RegistryError when etcd cannot be read."""
        kv = await self._kv.get(self._key)
        found = overrides_of(kv)
        if isinstance(found, BadRecord):
            assert kv is not None
            if self._reported.first(kv.key, kv.mod_revision):
                logger.warning("ignoring live metadata: %s", found)
            found = {}
        changed = dict(found) != dict(self.overrides)
        if changed:
            logger.info("machine=%s live metadata overrides: %s", self._machine_id, _shown(found))
        self.overrides = found
        self.ready = True
        return changed

    async def run(self, wake: Callable[[], None], sleep: Sleep = asyncio.sleep) -> None:
        """Read every ``interval`` seconds, calling ``wake`` after a change; an unreachable etcd is
        logged once per outage and retried on the next tick (the overrides last read hold meanwhile)."""
        while True:
            await sleep(self.interval)
            if not self.needed:
                self.ready = False  # read again before the next pass that needs it
                continue
            try:
                changed = await self.refresh()
            except RegistryError as exc:
                if not self._failing:
                    logger.warning("reading this machine's live metadata failed (%s); retrying", exc)
                self._failing = True
                continue
            self._failing = False
            if changed:
                wake()
