"""Engine election on MemoryKV: standbys hold no lease, before and after a new leader was elected (that
the standbys do not all take a lease at once is shown on real etcd: tests/integration/test_no_herd.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fleetd.engine.election import Election
from fleetd.registry.memory import MemoryKV

CANDIDATES = 20


class Granting(MemoryKV):
    """Counts the leases granted."""

    def __init__(self) -> None:
        super().__init__()
        self.grants = 0

    async def grant(self, ttl: float) -> int:
        self.grants += 1
        return await super().grant(ttl)


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - an election has no event for "won"
            await asyncio.sleep(0.005)


def test_standbys_hold_no_lease_before_and_after_a_new_leader() -> None:
    async def main() -> None:
        kv = Granting()
        elections = [Election(kv, "/leader", f"m{i:02}", 1.0) for i in range(CANDIDATES)]
        tasks = [asyncio.create_task(e.run()) for e in elections]
        try:
            await _until(lambda: sum(e.is_leader for e in elections) == 1)
            await _until(lambda: all(e.leader for e in elections))
            first = next(e for e in elections if e.is_leader)
            assert all(e._lease == 0 for e in elections if e is not first), "a standby holds a lease"
            grants = kv.grants
            await first.resign()
            await _until(lambda: any(e.is_leader for e in elections if e is not first))
            await asyncio.sleep(0.2)  # every jitter (at most ttl / 20 = 50 ms) has run out
            assert sum(e.is_leader for e in elections) == 1
            assert kv.grants - grants <= CANDIDATES // 4, f"{kv.grants - grants} leases for one new leader"
            assert sum(e._lease != 0 for e in elections) == 1, "a standby kept its lease"
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await kv.close()

    asyncio.run(main())
