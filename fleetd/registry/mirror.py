"""A watch-fed in-memory copy of some key prefixes: list once, then apply watch events.

The prefixes are listed at one revision R (in pages), then each is watched from R + 1 (one watch per
prefix, so a consumer is woken only by the prefixes it asked for). A compacted watch revision means
relist; any other registry failure is logged and retried with a relist after a short delay. Readers see
plain mappings and an ``asyncio.Event`` that is set after every change (the consumer clears it).

A prefix given a decoder keeps ``Decoded`` entries: the decoder's record (or the ``BadRecord`` it raised),
made once when the key arrives, and no value text. Other prefixes keep ``KeyValue`` entries with the key,
the value and the mod revision only. At 100,000 units that is most of a leader's memory: the raw text,
the revisions no reader uses, and a second decoded copy per key cost about as much again as the records.

With ``log_changes`` the mirror also notes which keys changed since the last ``take_changes()``, so a
consumer that keeps its own copy (the engine's snapshot builder) updates only those: ``take_changes``
hands out the entries of the changed keys (None for a deleted one), or every entry after a (re)listing.
What it hands out is never changed afterwards, so it can be read off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fleetd.cancel import all_or_first_failure, first_failure
from fleetd.errors import RegistryError
from fleetd.registry.keyspace import BadRecord
from fleetd.registry.kv import KV, EventType, KeyValue, KVClosed, RangeResult, WatchCompacted, WatchEvent
from fleetd.registry.pages import range_pages

__all__ = ["Changes", "Decoded", "Decoder", "Mirror"]

Decoder = Callable[[KeyValue], object]  # raises BadRecord for a key or value it cannot use


@dataclass(frozen=True, slots=True)
class Decoded:
    """A mirrored key of a decoded prefix: its mod revision and what the decoder made of it."""

    key: str
    mod_revision: int
    record: object  # the decoder's result, or the BadRecord it raised



@dataclass(frozen=True, slots=True)
class Changes:
    """What changed since the last take: per prefix, each changed key's entry now (None: deleted).
    ``complete``: the entries are every key of every prefix (a listing since, or asked for): start over."""

    complete: bool
    entries: Mapping[str, Mapping[str, KeyValue | Decoded | None]]


logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0
LIST_PAGE = 5_000  # keys per range request while listing: a leader lists 100,000s of keys when it wins


class Mirror:
    """Mirror of ``prefixes`` in ``kv``; run ``run()`` as a task, await ``ready`` before reading."""

    def __init__(
        self,
        kv: KV,
        prefixes: Sequence[str],
        *,
        retry_delay: float = RETRY_DELAY,
        decoders: Mapping[str, Decoder] | None = None,
        page: int = LIST_PAGE,
        log_changes: bool = False,
    ) -> None:
        self._kv = kv
        self._page = page
        self.prefixes = tuple(prefixes)
        self._retry_delay = retry_delay
        self._decoders = dict(decoders or {})
        unknown = self._decoders.keys() - set(self.prefixes)
        if unknown:
            raise ValueError(f"decoders for prefixes not mirrored: {sorted(unknown)}")
        self._data: dict[str, dict[str, Any]] = {p: {} for p in self.prefixes}
        self._revisions: dict[str, int] = dict.fromkeys(self.prefixes, 0)
        self._advanced = asyncio.Condition()
        self.changed = asyncio.Event()  # set after every change; consumers clear it
        self.ready = asyncio.Event()  # set once the first listing is in
        self.relists = 0  # listings after the first (compaction, errors)
        self.generation = 0  # bumped on every change: cheap "did anything change" checks
        # keys changed since the last take_changes(), in change order (None: not logging); a listing
        # since then makes the next take a complete one
        self._log: dict[str, dict[str, None]] | None = {p: {} for p in self.prefixes} if log_changes else None
        self._listed = True

    # Reading ----------------------------------------------------------------------------------------

    def items(self, prefix: str) -> Mapping[str, KeyValue]:
        """The current keys under one mirrored prefix without a decoder (a read-only live view)."""
        if prefix in self._decoders:
            raise KeyError(f"{prefix} is decoded: read it with records()")
        return MappingProxyType(self._data[prefix])

    def records(self, prefix: str) -> Mapping[str, Decoded]:
        """The current decoded keys under one mirrored prefix with a decoder (a read-only live view)."""
        if prefix not in self._decoders:
            raise KeyError(f"{prefix} has no decoder: read it with items()")
        return MappingProxyType(self._data[prefix])

    def entries(self, prefix: str) -> Mapping[str, KeyValue | Decoded]:
        """The current keys under one mirrored prefix, in whichever form it keeps them (read-only)."""
        return MappingProxyType(self._data[prefix])

    def get(self, key: str) -> KeyValue | Decoded | None:
        for prefix, data in self._data.items():
            if key.startswith(prefix):
                found: KeyValue | Decoded | None = data.get(key)
                return found
        return None

    def take_changes(self, *, complete: bool = False) -> Changes:
        """The keys changed since the last take (their entries now), and forget them; every key when the
        mirror (re)listed since, or when ``complete`` is asked for. Needs ``log_changes``."""
        log = self._log
        if log is None:
            raise RuntimeError("this mirror does not log changes")
        self._log = {p: {} for p in self.prefixes}
        if complete or self._listed:
            self._listed = False
            return Changes(True, {p: dict(data) for p, data in self._data.items()})
        entries = {p: {key: self._data[p].get(key) for key in keys} for p, keys in log.items() if keys}
        return Changes(False, entries)

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
        """Every prefix at one revision, page by page: each page is stored (and decoded) as it arrives,
        so listing 100,000s of keys never holds the loop for more than one page. The first page fixes the
        revision; then every prefix is listed at once, each with its next page asked for while the current
        one is decoded (etcd reads while this process decodes: a new leader lists sooner)."""
        first = await self._kv.range(self.prefixes[0], limit=self._page)
        revision = first.revision
        listed = await all_or_first_failure(*(
            self._list_prefix(prefix, revision, first if index == 0 else None)
            for index, prefix in enumerate(self.prefixes)
        ))
        self._data = dict(zip(self.prefixes, listed, strict=True))
        if self._log is not None:
            self._log, self._listed = {p: {} for p in self.prefixes}, True
        await self._advance(dict.fromkeys(self.prefixes, revision))
        self.ready.set()
        return revision

    async def _list_prefix(self, prefix: str, revision: int, page: RangeResult | None) -> dict[str, Any]:
        """One prefix at ``revision`` (``page``: its first page, if already read)."""
        stored: dict[str, Any] = {}
        pages = range_pages(self._kv, prefix, revision=revision, page=self._page, first=page)
        async with contextlib.aclosing(pages):
            async for each in pages:
                self._store(prefix, stored, each.kvs)
        return stored

    async def _watch(self, prefix: str, start: int) -> None:
        async for batch in self._kv.watch(prefix, start):
            if batch:
                self._apply(prefix, batch)
                await self._advance({prefix: max(e.kv.mod_revision for e in batch)})

    def _apply(self, prefix: str, batch: Sequence[WatchEvent]) -> None:
        data = self._data[prefix]
        if self._log is not None:
            self._log[prefix].update(dict.fromkeys(event.kv.key for event in batch))
        for event in batch:
            if event.type is EventType.DELETE:
                data.pop(event.kv.key, None)
            else:
                self._store(prefix, data, (event.kv,))

    def _store(self, prefix: str, data: dict[str, Any], kvs: Iterable[KeyValue]) -> None:
        decoder = self._decoders.get(prefix)
        for kv in kvs:
            if decoder is None:
                data[kv.key] = KeyValue(kv.key, kv.value, 0, kv.mod_revision, 0, 0)
                continue
            try:
                record = decoder(kv)
            except BadRecord as exc:
                record = exc
            data[kv.key] = Decoded(kv.key, kv.mod_revision, record)

    async def _advance(self, revisions: Mapping[str, int]) -> None:
        async with self._advanced:
            for prefix, revision in revisions.items():
                self._revisions[prefix] = max(self._revisions[prefix], revision)
            self.generation += 1
            self.changed.set()
            self._advanced.notify_all()
