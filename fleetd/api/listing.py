"""Whole lists the API pages through, kept while the registry's revision stays the same.

fleet's page tokens are (limit, page) offsets into the sorted list, so every page of ``GET units`` or
``GET state`` needs the whole list. Reading it again for each page made walking 10,000 units quadratic
(101 pages, 21 s). A list is now read once per etcd revision: each page costs one one-key range (its header
carries the revision) while nothing changed, and a change anywhere reads the list anew, so a page is never
older than the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fleetd.registry.registry import Registry

__all__ = ["Listings"]

T = TypeVar("T")


class Listings:
    """Per list name, the last list read and the revision seen just before reading it."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._lists: dict[str, tuple[int, Any]] = {}
        self.reads = 0  # lists read (not served from the cache): for tests

    async def get(self, name: str, read: Callable[[], Awaitable[T]]) -> T:
        """The list ``name`` as ``read`` returns it, read again only when etcd's revision moved."""
        revision = (await self._registry.kv.range(self._registry.keys.prefix, limit=1)).revision
        kept = self._lists.get(name)
        if kept is not None and kept[0] == revision:
            value: T = kept[1]
            return value
        value = await read()
        self.reads += 1
        self._lists[name] = (revision, value)
        return value
