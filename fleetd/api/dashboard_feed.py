"""The dashboard's live feed: one registry watch per dashboard server, fanned out to every connected browser.

The feed runs only while someone looks (a browser's event stream or a unit page holds it, ``hold()``) and
stops ``linger`` seconds after the last one left, so an idle fleetd mirrors nothing. Running, it lists the
shown prefixes at one revision, then follows one watch on the whole key prefix from the next revision; each
watch batch becomes at most one ``diff`` message for every subscriber. A compacted watch or a registry
failure means relisting; every subscriber then gets a fresh ``snapshot``.

Each subscriber has a bounded backlog: one that falls behind (a stalled browser) is dropped, its stream
ends, and the browser reconnects and starts again from a snapshot; nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fleetd.api.dashboard_state import Broadcast, ClusterView, Touched
from fleetd.cancel import cancel_and_wait
from fleetd.errors import RegistryError, RegistryUnavailable
from fleetd.registry.kv import EventType, KVClosed, WatchCompacted
from fleetd.registry.pages import range_paged
from fleetd.registry.registry import Registry

__all__ = ["DashboardFeed", "Subscriber", "sse_frame"]

logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0
LINGER = 30.0  # seconds the feed keeps running after the last viewer left
BACKLOG = 512  # messages a subscriber may fall behind before it is dropped
READY_TIMEOUT = 10.0


def sse_frame(event: str, data: Any) -> str:
    """One server-sent event: ``event`` with ``data`` as compact JSON (one line: JSON escapes newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Subscriber:
    """One browser's queue of frames; ``next()`` returns None once it was closed or dropped."""

    def __init__(self, backlog: int = BACKLOG) -> None:
        self._frames: deque[str] = deque()
        self._backlog = backlog
        self._wake = asyncio.Event()
        self.closed = False

    def offer(self, frame: str) -> None:
        if self.closed:
            return
        if len(self._frames) >= self._backlog:
            self._frames.clear()  # too far behind: end its stream; it reconnects from a snapshot
            self.close()
            return
        self._frames.append(frame)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self) -> str | None:
        while not self._frames:
            if self.closed:
                return None
            await self._wake.wait()
            self._wake.clear()
        return self._frames.popleft()


class DashboardFeed:
    """The live view of ``registry`` for the dashboard; see the module docstring."""

    def __init__(
        self, registry: Registry, *, retry_delay: float = RETRY_DELAY, linger: float = LINGER,
        backlog: int = BACKLOG,
    ) -> None:
        self.registry = registry
        self.view = ClusterView(registry.keys.prefix)
        self.ready = asyncio.Event()
        self.relists = 0
        self.frames_sent = 0  # diff frames handed to subscribers (for the figures)
        self.bytes_sent = 0
        self._retry_delay = retry_delay
        self._linger = linger
        self._backlog = backlog
        self._broadcast = Broadcast(self.view)
        self._subscribers: set[Subscriber] = set()
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.TimerHandle | None = None
        self._snapshot: str | None = None

    # Viewers ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold(self, within: float = READY_TIMEOUT) -> AsyncIterator[None]:
        """Keep the feed running while inside; waits until it has listed the registry (RegistryUnavailable
        after ``within`` seconds without a listing)."""
        self._users += 1
        if self._stop is not None:
            self._stop.cancel()
            self._stop = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="dashboard-feed")
        try:
            try:
                async with asyncio.timeout(within):
                    await self.ready.wait()
            except TimeoutError:
                raise RegistryUnavailable("the dashboard could not list the registry in time") from None
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                self._stop = asyncio.get_running_loop().call_later(self._linger, self._halt)

    def subscribe(self) -> Subscriber:
        """A new subscriber whose first frame is the current snapshot (call inside ``hold()``)."""
        subscriber = Subscriber(self._backlog)
        subscriber.offer(self.snapshot_frame())
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.close()
        self._subscribers.discard(subscriber)

    def snapshot_frame(self) -> str:
        if self._snapshot is None:
            self._snapshot = sse_frame("snapshot", self.view.snapshot_json())
        return self._snapshot

    def _publish(self, frame: str) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(frame)
            if subscriber.closed:
                self._subscribers.discard(subscriber)

    def _halt(self) -> None:
        self._stop = None
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self.ready.clear()

    async def close(self) -> None:
        """End every stream and stop the feed (the server is shutting down)."""
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
        if self._stop is not None:
            self._stop.cancel()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # Following the registry -------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then follow the watch until cancelled or the KV closes; relist after any failure."""
        while True:
            try:
                revision = await self._list()
                await self._follow(revision + 1)
                return  # the watch ended: the KV was closed
            except KVClosed:
                return
            except WatchCompacted as exc:
                logger.info("dashboard relisting: %s", exc)
            except RegistryError as exc:
                logger.warning("dashboard feed failed, relisting in %.1fs: %s", self._retry_delay, exc)
                await asyncio.sleep(self._retry_delay)
            self.relists += 1

    async def _list(self) -> int:
        keys = self.registry.keys
        kv = self.registry.kv
        prefixes = (keys.machines, keys.cordons, keys.units, keys.targets, keys.schedules, keys.states,
                    keys.unplaceable, keys.leader)
        view = ClusterView(keys.prefix)
        revision = 0
        for prefix in prefixes:
            result = await range_paged(kv, prefix, revision=revision)
            revision = revision or result.revision
            view.apply_all((item.key, item.value) for item in result.kvs)
        view.revision = revision
        self.view = view
        self._broadcast = Broadcast(view)
        self._snapshot = None
        self.ready.set()
        if self._subscribers:
            self._publish(self.snapshot_frame())
        return revision

    async def _follow(self, start: int) -> None:
        events = self.registry.kv.watch(self.registry.keys.prefix, start)
        try:
            async for batch in events:
                touched = Touched()
                for event in batch:
                    value = None if event.type is EventType.DELETE else event.kv.value
                    touched.add(self.view.apply(event.kv.key, value))
                    self.view.revision = max(self.view.revision, event.kv.mod_revision)
                changes = self._broadcast.changes(touched) if touched else []
                if changes:
                    self._snapshot = None
                    frame = sse_frame("diff", {"revision": self.view.revision, "changes": changes})
                    self.frames_sent += 1
                    self.bytes_sent += len(frame.encode())
                    self._publish(frame)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
