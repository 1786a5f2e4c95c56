"""Fan-out of unit-change notifications: each ``subscribe()`` iterator sees every name notified after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fleetd.model import UnitName

__all__ = ["ChangeFeed"]


class ChangeFeed:
    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[UnitName]] = set()

    def notify(self, name: UnitName) -> None:
        for queue in self._listeners:
            queue.put_nowait(name)

    async def subscribe(self) -> AsyncIterator[UnitName]:
        queue: asyncio.Queue[UnitName] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)
