"""The KV contract on MemoryKV, plus what only the in-memory KV offers (a manual clock, compaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fleetd.errors import RegistryError
from fleetd.registry.kv import KV
from fleetd.registry.memory import MemoryKV
from tests.contract.kv_contract import KVContract, Scenario


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryHarness:
    prefix = "/test/"

    def __init__(self) -> None:
        self.clock = ManualClock()

    def run(self, scenario: Scenario) -> None:
        async def main() -> None:
            kv = MemoryKV(clock=self.clock)
            try:
                await scenario(kv)
            finally:
                await kv.close()

        asyncio.run(main())

    async def let_time_pass(self, seconds: float) -> None:
        self.clock.now += seconds

    async def compact(self, kv: KV, revision: int) -> None:
        assert isinstance(kv, MemoryKV)
        await kv.compact(revision)


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    yield MemoryHarness()


class TestMemoryKV(KVContract):
    pass


def test_leases_expire_on_the_manual_clock_without_any_call() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock=clock)

    async def main() -> None:
        lease = await kv.grant(5)
        rev = await kv.put("/k", "v", lease=lease)
        clock.now += 4.9
        assert await kv.get("/k") is not None
        clock.now += 0.2
        kv.expire_leases()
        assert kv.revision == rev + 1
        assert await kv.get("/k") is None

    asyncio.run(main())


def test_compaction_keeps_the_state_at_the_compacted_revision() -> None:
    async def main() -> None:
        kv = MemoryKV()
        await kv.put("/a", "1")
        rev = await kv.put("/b", "2")
        await kv.put("/a", "3")
        await kv.compact(rev)
        assert [x.value for x in (await kv.range("/", revision=rev)).kvs] == ["1", "2"]
        with pytest.raises(RegistryError):
            await kv.range("/", revision=rev - 1)
        it = aiter(kv.watch("/", rev))
        batch = await anext(it)
        assert [e.kv.value for e in batch] == ["2", "3"]
        await kv.close()

    asyncio.run(main())
