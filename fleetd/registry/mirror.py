"""A watch-fed in-memory copy of some key prefixes: list once, then apply watch events.

The prefixes are listed at one revision R (in pages), then each is watched from R + 1 (one watch per
prefix, so a consumer is woken only by the prefixes it asked for). A compacted watch revision means
relist; any other registry failure is logged and retried with a relist after a short delay. Readers see
plain mappings and an ``asyncio.Event`` that is set after every change (the consumer clears it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from fleetd.cancel import first_failure
from fleetd.errors import RegistryError
from fleetd.registry.kv import KV, EventType, KeyValue, KVClosed, WatchCompacted, WatchEvent, range_paged

__all__ = ["Mirror"]

logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0


class Mirror:
    """Mirror of ``prefixes`` in ``kv``; run ``run()`` as a task, await ``ready`` before reading."""

    def __init__(self, kv: KV, prefixes: Sequence[str], *, retry_delay: float = RETRY_DELAY) -> None:
        self._kv = kv
        self.prefixes = tuple(prefixes)
        self._retry_delay = retry_delay
        self._data: dict[str, dict[str, KeyValue]] = {p: {} for p in self.prefixes}
        self._revisions: dict[str, int] = dict.fromkeys(self.prefixes, 0)
        self._advanced = asyncio.Condition()
        self.changed = asyncio.Event()  # set after every change; consumers clear it
        self.ready = asyncio.Event()  # set once the first listing is in
        self.relists = 0  # listings after the first (compaction, errors)
        self.generation = 0  # bumped on every change: cheap "did anything change" checks

    # Reading ----------------------------------------------------------------------------------------

    def items(self, prefix: str) -> Mapping[str, KeyValue]:
        """The current keys under one mirrored prefix (a read-only live view)."""
        return MappingProxyType(self._data[prefix])

    def get(self, key: str) -> KeyValue | None:
        for prefix, data in self._data.items():
            if key.startswith(prefix):
                return data.get(key)
        return None

    @property
    def revision(self) -> int:
        """The newest revision seen on any prefix (listing or event)."""
        return max(self._revisions.values(), default=0)

    def revision_of(self, prefix: str) -> int:
        return self._revisions[prefix]

    async def wait_for(self, revision: int, prefix: str) -> None:
        """Wait until ``prefix`` has been mirrored up to ``revision`` (bound it with ``asyncio.timeout``)."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self._revisions[prefix] >= revision)

    # Running ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then follow the watches until the KV closes; relist on compaction or failure."""
        first = True
        while True:
            try:
                revision = await self._list()
            except KVClosed:
                return
            except RegistryError as exc:
                await self._retry_later(exc)
                continue
            if not first:
                self.relists += 1
            first = False
            failure = await first_failure(*(self._watch(p, revision + 1) for p in self.prefixes))
            if failure is None or isinstance(failure, KVClosed):
                return  # a watch ended: the KV was closed
            if isinstance(failure, WatchCompacted):
                logger.info("mirror relisting: %s", failure)
            elif isinstance(failure, RegistryError):
                await self._retry_later(failure)
            else:
                raise failure

    async def _retry_later(self, error: RegistryError) -> None:
        logger.warning("mirror failed, relisting in %.1fs: %s", self._retry_delay, error)
        await asyncio.sleep(self._retry_delay)

    async def _list(self) -> int:
        data: dict[str, dict[str, KeyValue]] = {}
        revision = 0
        for prefix in self.prefixes:
            result = await range_paged(self._kv, prefix, revision=revision)
            revision = revision or result.revision
            data[prefix] = {kv.key: kv for kv in result.kvs}
        self._data = data
        await self._advance(dict.fromkeys(self.prefixes, revision))
        self.ready.set()
        return revision

    async def _watch(self, prefix: str, start: int) -> None:
        async for batch in self._kv.watch(prefix, start):
            if batch:
                self._apply(prefix, batch)
                await self._advance({prefix: max(e.kv.mod_revision for e in batch)})

    def _apply(self, prefix: str, batch: Sequence[WatchEvent]) -> None:
        data = self._data[prefix]
        for event in batch:
            if event.type is EventType.DELETE:
                data.pop(event.kv.key, None)
            else:
                data[event.kv.key] = event.kv

    async def _advance(self, revisions: Mapping[str, int]) -> None:
        async with self._advanced:
            for prefix, revision in revisions.items():
                self._revisions[prefix] = max(self._revisions[prefix], revision)
            self.generation += 1
            self.changed.set()
            self._advanced.notify_all()
