"""The watch-fed mirror on MemoryKV: initial listing, events, revisions, wake-ups, relist on compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from fleetd.registry.keyspace import BadRecord
from fleetd.registry.kv import KeyValue, WatchCompacted, WatchEvent
from fleetd.registry.memory import MemoryKV
from fleetd.registry.mirror import Decoded, Mirror


class TracingKV(MemoryKV):
    """Counts ranges and can make the next watches fail as if their start revision was compacted."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges = 0
        self.compacted_watches = 0

    async def range(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""):  # type: ignore[no-untyped-def]
        self.ranges += 1
        return await super().range(prefix, revision=revision, limit=limit, start=start)

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        if self.compacted_watches:
            self.compacted_watches -= 1
            return self._fail_as_compacted()
        return super().watch(prefix, start_revision, prev_kv=prev_kv)

    async def _fail_as_compacted(self) -> AsyncIterator[Sequence[WatchEvent]]:
        raise WatchCompacted(self.revision)
        yield ()  # pragma: no cover - makes this an async generator


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a plain predicate with a deadline."""
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the predicate has no event to wait on
            await asyncio.sleep(0.001)


def run(test: Callable[[TracingKV], Awaitable[None]]) -> None:
    async def main() -> None:
        kv = TracingKV()
        try:
            await test(kv)
        finally:
            await kv.close()

    asyncio.run(main())


def test_lists_once_then_follows_events_without_rereading() -> None:
    async def t(kv: TracingKV) -> None:
        await kv.put("/p/a/1", "one")
        await kv.put("/p/b/1", "uno")
        await kv.put("/p/c/1", "not mirrored")
        mirror = Mirror(kv, ["/p/a/", "/p/b/"])
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        assert dict((k, v.value) for k, v in mirror.items("/p/a/").items()) == {"/p/a/1": "one"}
        assert mirror.get("/p/b/1").value == "uno"  # type: ignore[union-attr]
        assert mirror.get("/p/c/1") is None
        ranges = kv.ranges

        mirror.changed.clear()
        revision = await kv.put("/p/a/2", "two")
        await asyncio.wait_for(mirror.wait_for(revision, "/p/a/"), 5)
        assert mirror.changed.is_set()
        assert mirror.revision == revision
        await kv.delete("/p/a/1")
        await kv.put("/p/c/2", "ignored")
        await until(lambda: "/p/a/1" not in mirror.items("/p/a/"))
        assert sorted(mirror.items("/p/a/")) == ["/p/a/2"]
        assert kv.ranges == ranges  # events only, no re-reads
        assert mirror.relists == 0
        task.cancel()

    run(t)


def test_unrelated_prefix_does_not_wake_the_mirror() -> None:
    async def t(kv: TracingKV) -> None:
        mirror = Mirror(kv, ["/p/a/"])
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        mirror.changed.clear()
        await kv.put("/p/b/x", "1")
        await kv.put("/p/ab", "1")  # a sibling that shares the text prefix but not the directory
        marker = await kv.put("/p/a/x", "1")
        await asyncio.wait_for(mirror.wait_for(marker, "/p/a/"), 5)
        assert list(mirror.items("/p/a/")) == ["/p/a/x"]
        task.cancel()

    run(t)


def test_compacted_watch_relists_and_catches_up() -> None:
    async def t(kv: TracingKV) -> None:
        await kv.put("/p/a/1", "one")
        kv.compacted_watches = 1
        mirror = Mirror(kv, ["/p/a/"], retry_delay=0.01)
        task = asyncio.create_task(mirror.run())
        await until(lambda: mirror.relists == 1)
        revision = await kv.put("/p/a/2", "two")
        await asyncio.wait_for(mirror.wait_for(revision, "/p/a/"), 5)
        assert sorted(mirror.items("/p/a/")) == ["/p/a/1", "/p/a/2"]
        assert kv.ranges == 2
        task.cancel()

    run(t)


def test_run_returns_when_the_kv_closes() -> None:
    async def t(kv: TracingKV) -> None:
        mirror = Mirror(kv, ["/p/a/"])
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        await kv.close()
        await asyncio.wait_for(task, 5)

    run(t)


def test_run_returns_when_the_kv_was_closed_before_it_listed() -> None:
    async def t(kv: TracingKV) -> None:
        await kv.close()
        mirror = Mirror(kv, ["/p/a/"])
        await asyncio.wait_for(mirror.run(), 5)  # no relist loop on a closed KV
        assert not mirror.ready.is_set()

    run(t)


class DroppingKV(MemoryKV):
    """A MemoryKV whose watches can lose their connection. Dropped, they deliver nothing; reconnected,
    they resume from the last delivered revision + 1, as EtcdKV's watches do, so a compaction meanwhile
    ends them with WatchCompacted."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = asyncio.Event()
        self.connected.set()
        self._drops = 0

    def drop(self) -> None:
        self._drops += 1
        self.connected.clear()

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        return self._resuming(prefix, start_revision, prev_kv)

    async def _resuming(self, prefix: str, start: int, prev_kv: bool) -> AsyncIterator[Sequence[WatchEvent]]:
        while True:
            await self.connected.wait()
            connection = self._drops
            inner = super().watch(prefix, start, prev_kv=prev_kv)
            try:
                async for batch in inner:
                    if self._drops != connection:
                        break  # lost with the connection: delivered again after the resume
                    if batch:
                        start = max(event.kv.mod_revision for event in batch) + 1
                    yield batch
            finally:
                await inner.aclose()  # type: ignore[attr-defined]


def test_a_watcher_behind_a_compaction_relists_and_misses_nothing() -> None:
    async def t() -> None:
        kv = DroppingKV()
        try:
            await kv.put("/p/a/gone", "1")
            await kv.put("/p/a/changed", "old")
            await kv.put("/p/b/kept", "1")
            mirror = Mirror(kv, ["/p/a/", "/p/b/"], retry_delay=0.01)
            task = asyncio.create_task(mirror.run())
            await asyncio.wait_for(mirror.ready.wait(), 5)
            kv.drop()  # the mirror falls behind: these changes reach it only through a relist
            await kv.delete("/p/a/gone")
            await kv.put("/p/a/changed", "new")
            await kv.put("/p/a/added", "1")
            await kv.put("/p/b/added", "1")
            now = await kv.put("/p/b/kept", "2")
            await kv.compact(now)
            kv.connected.set()
            await asyncio.wait_for(mirror.wait_for(now, "/p/a/"), 5)
            await asyncio.wait_for(mirror.wait_for(now, "/p/b/"), 5)
            assert mirror.relists == 1
            for prefix in ("/p/a/", "/p/b/"):
                stored = {item.key: item.value for item in (await kv.range(prefix)).kvs}
                assert {key: item.value for key, item in mirror.items(prefix).items()} == stored
            later = await kv.put("/p/a/after", "1")  # and it follows events again
            await asyncio.wait_for(mirror.wait_for(later, "/p/a/"), 5)
            assert "/p/a/after" in mirror.items("/p/a/")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await kv.close()

    asyncio.run(t())


def test_a_decoded_prefix_keeps_records_and_no_text() -> None:
    def decode(kv: KeyValue) -> int:
        if not kv.value.isdigit():
            raise BadRecord(kv.key, "not a number")
        return int(kv.value)

    async def t(kv: TracingKV) -> None:
        await kv.put("/p/n/1", "1")
        await kv.put("/p/n/bad", "x")
        await kv.put("/p/raw/1", "text")
        mirror = Mirror(kv, ["/p/n/", "/p/raw/"], decoders={"/p/n/": decode})
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        records = mirror.records("/p/n/")
        assert records["/p/n/1"].record == 1
        assert isinstance(records["/p/n/bad"].record, BadRecord)
        raw = mirror.items("/p/raw/")["/p/raw/1"]
        assert (raw.value, raw.create_revision, raw.version) == ("text", 0, 0)  # only what readers use
        revision = await kv.put("/p/n/2", "22")
        await mirror.wait_for(revision, "/p/n/")
        assert mirror.records("/p/n/")["/p/n/2"] == Decoded("/p/n/2", revision, 22)
        with pytest.raises(KeyError):
            mirror.items("/p/n/")
        with pytest.raises(KeyError):
            mirror.records("/p/raw/")
        task.cancel()

    run(t)


PAGE = 100


def test_a_listing_is_decoded_page_by_page() -> None:
    """More keys than one range page: every one listed and decoded, one range request per page."""

    async def t(kv: TracingKV) -> None:
        for i in range(PAGE * 2 + 3):
            await kv.put(f"/p/n/{i:05d}", str(i))
        mirror = Mirror(kv, ["/p/n/"], decoders={"/p/n/": lambda kv: int(kv.value)}, page=PAGE)
        before = kv.ranges
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        assert kv.ranges - before == 3
        assert sorted(d.record for d in mirror.records("/p/n/").values()) == list(range(PAGE * 2 + 3))
        task.cancel()

    run(t)


def test_prefixes_are_listed_together_at_one_revision_while_writes_land() -> None:
    """Pages of several prefixes are asked for at once and ahead of decoding; writes that land meanwhile
    are not in the listing (it is at the first page's revision) and arrive through the watches."""

    class Writing(TracingKV):
        """Writes one key under each prefix, and counts the ranges in flight, at every range."""

        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most = self.extra = 0

        async def range(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""):  # type: ignore[no-untyped-def]
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(0)
                got = await super().range(prefix, revision=revision, limit=limit, start=start)
                if revision:  # a listing page: something is written meanwhile
                    self.extra += 1
                    for p in ("/p/a/", "/p/b/"):
                        await self.put(f"{p}late-{self.extra:03d}", "-1")
                return got
            finally:
                self.in_flight -= 1

    async def t(_kv: TracingKV) -> None:
        kv = Writing()
        for p in ("/p/a/", "/p/b/"):
            for i in range(PAGE * 3):
                await kv.put(f"{p}{i:05d}", str(i))
        decoders = {"/p/a/": lambda e: int(e.value)}
        mirror = Mirror(kv, ["/p/a/", "/p/b/"], decoders=decoders, page=PAGE)  # type: ignore[dict-item]
        task = asyncio.create_task(mirror.run())
        await asyncio.wait_for(mirror.ready.wait(), 5)
        assert kv.most >= 2, "one range request at a time"
        late = 2 * kv.extra
        await until(lambda: len(mirror.records("/p/a/")) + len(mirror.items("/p/b/")) == PAGE * 6 + late)
        listed = sorted(d.record for d in mirror.records("/p/a/").values() if d.record != -1)
        assert listed == list(range(PAGE * 3))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kv.close()

    run(t)
