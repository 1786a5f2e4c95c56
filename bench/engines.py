"""Benchmark-only engines: the production ``Engine`` with what a benchmark needs to observe or reproduce.

- ``SimEngine`` is the production engine, timed: it records how long each pass (snapshot build, plan,
  apply, body collection) took and when it ended. Cancelling its ``run()`` is ``kill -9``: the leader key is
  not released and the lease simply stops being kept alive (production ``Engine.run`` resigns on the way out,
  as a SIGTERM'd fleetd does), so a killed leader is replaced only when etcd expires its lease.
- ``MirroringEngine`` is the anchor for the issue-15 figures: the same engine with the composition before
  the change, where every standby candidate kept a full watch-fed mirror of machines/, units/, targets/,
  schedule/ and bodies/. It exists here, not behind a flag in fleetd, so production code has no test switch.

Both reach into ``Engine`` internals (``_kv``, ``_loop``, ``election``); they are pinned to its current shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fleetd.engine.engine import Engine
from fleetd.registry.kv import KV
from fleetd.registry.mirror import Mirror

__all__ = ["MirroringEngine", "SimEngine"]


class SimEngine(Engine):
    """The production engine; ``pass_seconds`` and ``pass_ends`` record every completed leader pass."""

    def __init__(self, kv: KV, machine_id: str, **options: Any) -> None:
        super().__init__(kv, machine_id, **options)
        self.pass_seconds: list[float] = []
        self.pass_ends: list[float] = []  # clock() at the end of each pass

    async def run(self) -> None:
        """Campaign and reconcile until cancelled; a cancel leaves leadership to expire (kill -9)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.election.run())
            group.create_task(self._loop())

    async def reconcile(self) -> None:
        before, started = self.passes, self._clock()
        await super().reconcile()
        if self.passes > before:
            ended = self._clock()
            self.pass_seconds.append(ended - started)
            self.pass_ends.append(ended)


class MirroringEngine(SimEngine):
    """Anchor: a standby keeps a full mirror of the registry, as every candidate did before issue 15."""

    standby_mirror: Mirror | None = None

    async def _loop(self) -> None:
        keys = self.registry.keys
        while True:
            if not self.election.is_leader:
                prefixes = [keys.machines, keys.units, keys.targets, keys.schedules, keys.bodies]
                mirror = Mirror(self._kv, prefixes)
                follow = asyncio.create_task(mirror.run())
                self.standby_mirror = mirror
                try:
                    while not self.election.is_leader:
                        self.election.changed.clear()
                        await self.election.changed.wait()
                finally:
                    self.standby_mirror = None
                    follow.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follow
            await self._lead()
