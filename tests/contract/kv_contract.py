"""The KV contract: one suite of etcd v3 semantics that every ``KV`` implementation must pass.

Use it by subclassing ``KVContract`` in a test module and providing a ``harness`` fixture that yields a
``Harness`` (see tests/unit/registry/test_memory_kv.py and tests/integration/test_etcd_kv.py). Each scenario
is an ``async def`` taking the KV under test and the harness; it runs in a fresh event loop with a fresh KV
and uses only keys under ``harness.prefix``, so one etcd can serve the whole session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import pytest

from fleetd.errors import RegistryError
from fleetd.registry.kv import (
    KV,
    MAX_TXN_OPS,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    Get,
    Put,
    WatchCompacted,
    WatchEvent,
)
from fleetd.registry.pages import range_paged, range_pages

Scenario = Callable[[KV], Awaitable[None]]


class Harness(Protocol):
    prefix: str

    def run(self, scenario: Scenario) -> None:
        """Run ``scenario`` with a fresh KV in a fresh event loop, then close that KV."""

    async def let_time_pass(self, seconds: float) -> None:
        """Make ``seconds`` of lease time pass (a manual clock jumps; real time may just be waited on)."""

    async def compact(self, kv: KV, revision: int) -> None:
        """Compact the store's history up to ``revision``."""


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def collect(
    it: AsyncIterator[Sequence[WatchEvent]], count: int, within: float = 10.0
) -> list[list[WatchEvent]]:
    """Read batches from a watch until ``count`` events arrived; returns the batches."""
    batches: list[list[WatchEvent]] = []
    async with asyncio.timeout(within):
        while sum(len(b) for b in batches) < count:
            batches.append(list(await anext(it)))
    return batches


def _flat(batches: list[list[WatchEvent]]) -> list[tuple[str, str, str]]:
    return [(e.type.value, e.kv.key, e.kv.value) for b in batches for e in b]


def scenario(fn: Callable[[Any, KV, Harness], Awaitable[None]]) -> Callable[[Any, Harness], None]:
    def test(self: Any, harness: Harness) -> None:
        harness.run(lambda kv: fn(self, kv, harness))

    test.__name__ = fn.__name__
    test.__doc__ = fn.__doc__
    return test


class KVContract:
    """etcd v3 semantics of the KV port. Subclasses provide the ``harness`` fixture."""

    # -- single keys -----------------------------------------------------------------------------------------

    @scenario
    async def test_put_then_get_tracks_versions_and_revisions(self, kv: KV, h: Harness) -> None:
        key = h.prefix + "k"
        assert await kv.get(key) is None
        first = await kv.put(key, "one")
        got = await kv.get(key)
        assert got is not None
        assert (got.value, got.create_revision, got.mod_revision, got.version, got.lease) == (
            "one", first, first, 1, 0,
        )
        second = await kv.put(key, "two")
        assert second == first + 1
        got = await kv.get(key)
        assert got is not None
        assert (got.value, got.create_revision, got.mod_revision, got.version) == ("two", first, second, 2)

    @scenario
    async def test_text_round_trips_as_utf8(self, kv: KV, h: Harness) -> None:
        key = h.prefix + "ünï/ключ"
        await kv.put(key, "ExecStart=/bin/echo «hi»\n")
        got = await kv.get(key)
        assert got is not None and got.value == "ExecStart=/bin/echo «hi»\n"

    @scenario
    async def test_delete_counts_and_only_real_deletes_make_revisions(self, kv: KV, h: Harness) -> None:
        rev = await kv.put(h.prefix + "d/a", "1")
        await kv.put(h.prefix + "d/b", "2")
        await kv.put(h.prefix + "dx", "3")
        assert await kv.delete(h.prefix + "d/a") == 1
        assert await kv.get(h.prefix + "d/a") is None
        before = (await kv.range(h.prefix)).revision
        assert before == rev + 3
        assert await kv.delete(h.prefix + "missing") == 0
        assert (await kv.range(h.prefix)).revision == before
        assert await kv.delete(h.prefix + "d/", prefix=True) == 1
        assert [x.key for x in (await kv.range(h.prefix)).kvs] == [h.prefix + "dx"]
        again = await kv.put(h.prefix + "d/a", "new")
        got = await kv.get(h.prefix + "d/a")
        assert got is not None and (got.version, got.create_revision) == (1, again)

    @scenario
    async def test_range_is_sorted_by_key_limited_and_scoped_to_the_prefix(self, kv: KV, h: Harness) -> None:
        for name in ("r/c", "r/a", "r/b/x", "r0", "q"):
            await kv.put(h.prefix + name, name)
        result = await kv.range(h.prefix + "r/")
        assert [x.key for x in result.kvs] == [h.prefix + n for n in ("r/a", "r/b/x", "r/c")]
        assert result.revision == max(x.mod_revision for x in result.kvs) + 2
        limited = await kv.range(h.prefix + "r/", limit=2)
        assert [x.value for x in limited.kvs] == ["r/a", "r/b/x"]
        assert (await kv.range(h.prefix + "nothing/")).kvs == ()

    @scenario
    async def test_range_from_a_start_key_and_paged_reads_see_one_revision(self, kv: KV, h: Harness) -> None:
        names = [f"p/{n:02d}" for n in range(7)]
        for name in names:
            await kv.put(h.prefix + name, name)
        tail = await kv.range(h.prefix + "p/", start=h.prefix + "p/03", limit=2)
        assert [x.value for x in tail.kvs] == ["p/03", "p/04"]
        assert (await kv.range(h.prefix + "p/", start=h.prefix + "p/99")).kvs == ()
        assert [x.value for x in (await kv.range(h.prefix + "p/", start=h.prefix)).kvs] == names
        first = await kv.range(h.prefix + "p/", limit=1)
        await kv.put(h.prefix + "p/00a", "late")  # written between pages: not in a paged read at one revision
        paged = await range_paged(kv, h.prefix + "p/", revision=first.revision, page=3)
        assert [x.value for x in paged.kvs] == names
        assert paged.revision == first.revision
        assert len((await range_paged(kv, h.prefix + "p/", page=2)).kvs) == len(names) + 1

    @scenario
    async def test_pages_come_at_one_revision_while_writes_land_and_stopping_early_leaves_nothing(
        self, kv: KV, h: Harness
    ) -> None:
        names = [f"q/{n:02d}" for n in range(7)]
        for name in names:
            await kv.put(h.prefix + name, name)
        seen: list[str] = []
        revisions = set()
        async for page in range_pages(kv, h.prefix + "q/", page=3):
            seen += [x.value for x in page.kvs]
            revisions.add(page.revision)
            await kv.put(h.prefix + f"q/{len(seen):02d}a", "late")  # after this page's revision
        assert seen == names and len(revisions) == 1
        pages = range_pages(kv, h.prefix + "q/", page=2)
        first = await anext(pages)
        assert len(first.kvs) == 2
        await pages.aclose()  # the page asked for ahead is dropped, not left running

    @scenario
    async def test_range_at_an_old_revision_sees_the_past(self, kv: KV, h: Harness) -> None:
        old = await kv.put(h.prefix + "h/a", "1")
        await kv.put(h.prefix + "h/a", "2")
        await kv.put(h.prefix + "h/b", "3")
        await kv.delete(h.prefix + "h/a")
        past = await kv.range(h.prefix + "h/", revision=old)
        assert [(x.key, x.value) for x in past.kvs] == [(h.prefix + "h/a", "1")]
        now = await kv.range(h.prefix + "h/")
        assert [x.value for x in now.kvs] == ["3"]
        with pytest.raises(RegistryError):
            await kv.range(h.prefix + "h/", revision=now.revision + 100)

    # -- transactions ----------------------------------------------------------------------------------------

    @scenario
    async def test_txn_create_if_absent(self, kv: KV, h: Harness) -> None:
        key = h.prefix + "leader"
        absent = Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 0)
        won = await kv.txn([absent], [Put(key, "m1")], [Get(key)])
        assert won.succeeded and won.responses == ((),)
        lost = await kv.txn([absent], [Put(key, "m2")], [Get(key)])
        assert not lost.succeeded and lost.revision == won.revision
        assert [x.value for x in lost.responses[0]] == ["m1"]

    @scenario
    async def test_txn_compares_on_every_target(self, kv: KV, h: Harness) -> None:
        key = h.prefix + "c"
        lease = await kv.grant(30)
        try:
            rev = await kv.put(key, "b", lease=lease)
            cases: list[tuple[CompareTarget, CompareOp, str | int, bool]] = [
                (CompareTarget.VALUE, CompareOp.EQUAL, "b", True),
                (CompareTarget.VALUE, CompareOp.NOT_EQUAL, "b", False),
                (CompareTarget.VALUE, CompareOp.GREATER, "a", True),
                (CompareTarget.VALUE, CompareOp.LESS, "a", False),
                (CompareTarget.VERSION, CompareOp.EQUAL, 1, True),
                (CompareTarget.VERSION, CompareOp.GREATER, 1, False),
                (CompareTarget.CREATE, CompareOp.EQUAL, rev, True),
                (CompareTarget.CREATE, CompareOp.LESS, rev, False),
                (CompareTarget.MOD, CompareOp.EQUAL, rev, True),
                (CompareTarget.MOD, CompareOp.GREATER, rev - 1, True),
                (CompareTarget.LEASE, CompareOp.EQUAL, lease, True),
                (CompareTarget.LEASE, CompareOp.EQUAL, 0, False),
            ]
            for target, op, value, expected in cases:
                result = await kv.txn([Compare(key, target, op, value)], [])
                assert result.succeeded is expected, (target, op, value)
            missing = h.prefix + "missing"
            missing_cases: list[tuple[CompareTarget, CompareOp, str | int, bool]] = [
                (CompareTarget.VERSION, CompareOp.EQUAL, 0, True),
                (CompareTarget.CREATE, CompareOp.EQUAL, 0, True),
                (CompareTarget.MOD, CompareOp.EQUAL, 0, True),
                (CompareTarget.LEASE, CompareOp.EQUAL, 0, True),
                # etcd: a value compare on a missing key always fails
                (CompareTarget.VALUE, CompareOp.EQUAL, "", False),
            ]
            for target, op, value, expected in missing_cases:
                result = await kv.txn([Compare(missing, target, op, value)], [])
                assert result.succeeded is expected, ("missing", target, op, value)
            both = [Compare(key, CompareTarget.VALUE, CompareOp.EQUAL, "b"),
                    Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 2)]
            assert not (await kv.txn(both, [])).succeeded
        finally:
            await kv.revoke(lease)

    @scenario
    async def test_a_writing_txn_is_one_revision(self, kv: KV, h: Harness) -> None:
        start = await kv.put(h.prefix + "t/old", "x")
        result = await kv.txn(
            [],
            [Put(h.prefix + "t/a", "1"), Put(h.prefix + "t/b", "2"), Delete(h.prefix + "t/old"),
             Get(h.prefix + "t/", prefix=True)],
        )
        assert result.succeeded and result.revision == start + 1
        assert result.responses[:3] == ((), (), ())
        assert [(x.key, x.mod_revision) for x in result.responses[3]] == [
            (h.prefix + "t/a", start + 1), (h.prefix + "t/b", start + 1),
        ]
        read_only = await kv.txn([], [Get(h.prefix + "t/a")])
        assert read_only.revision == start + 1 and read_only.responses[0][0].value == "1"
        failed = await kv.txn([Compare(h.prefix + "t/a", CompareTarget.VERSION, CompareOp.EQUAL, 5)], [])
        assert not failed.succeeded and failed.revision == start + 1
        nothing = await kv.txn([], [Delete(h.prefix + "t/none")])
        assert nothing.revision == start + 1

    @scenario
    async def test_txn_op_limits(self, kv: KV, h: Harness) -> None:
        full = [Put(f"{h.prefix}n/{i:03}", "v") for i in range(MAX_TXN_OPS)]
        assert (await kv.txn([], full)).succeeded
        assert len((await kv.range(h.prefix + "n/")).kvs) == MAX_TXN_OPS
        with pytest.raises(RegistryError):
            await kv.txn([], [*full, Put(h.prefix + "n/extra", "v")])
        with pytest.raises(RegistryError):
            await kv.txn([], [Put(h.prefix + "dup", "1"), Put(h.prefix + "dup", "2")])
        assert await kv.get(h.prefix + "dup") is None

    # -- watches ---------------------------------------------------------------------------------------------

    @scenario
    async def test_watch_replays_history_then_follows_live(self, kv: KV, h: Harness) -> None:
        p = h.prefix + "w/"
        first = await kv.put(p + "a", "1")
        await kv.put(p + "a", "2")
        await kv.put(h.prefix + "other", "x")
        await kv.delete(p + "a")
        it = aiter(kv.watch(p, first, prev_kv=True))
        try:
            history = await collect(it, 3)
            assert _flat(history) == [("put", p + "a", "1"), ("put", p + "a", "2"), ("delete", p + "a", "")]
            events = [e for b in history for e in b]
            assert [e.prev_value for e in events] == [None, "1", "2"]
            assert events[2].kv.mod_revision == first + 3 and events[2].kv.version == 0
            txn = await kv.txn([], [Put(p + "b", "3"), Put(p + "c", "4")])
            live = await collect(it, 2)
            assert len(live) == 1, "the events of one revision arrive in one batch"
            assert _flat(live) == [("put", p + "b", "3"), ("put", p + "c", "4")]
            assert {e.kv.mod_revision for e in live[0]} == {txn.revision}
        finally:
            await it.aclose()  # type: ignore[attr-defined]

    @scenario
    async def test_watch_from_zero_starts_now_and_omits_prev_unless_asked(self, kv: KV, h: Harness) -> None:
        p = h.prefix + "z/"
        await kv.put(p + "before", "old")
        it = aiter(kv.watch(p, 0))
        try:
            first = asyncio.ensure_future(anext(it))
            await asyncio.sleep(0.3)  # let a remote watch be created: "from now" means from its creation
            await kv.put(p + "before", "new")
            batches = [list(await asyncio.wait_for(first, 10))]
            assert _flat(batches) == [("put", p + "before", "new")]
            assert batches[0][0].prev_value is None and batches[0][0].kv.version == 2
        finally:
            await it.aclose()  # type: ignore[attr-defined]

    @scenario
    async def test_many_watches_each_see_only_their_prefix(self, kv: KV, h: Harness) -> None:
        start = await kv.put(h.prefix + "seed", "s")
        its = [aiter(kv.watch(f"{h.prefix}m/{i}/", start)) for i in range(50)]
        try:
            await kv.txn([], [Put(f"{h.prefix}m/{i}/unit", str(i)) for i in range(50)])
            for i, it in enumerate(its):
                assert _flat(await collect(it, 1)) == [("put", f"{h.prefix}m/{i}/unit", str(i))]
        finally:
            for it in its:
                await it.aclose()  # type: ignore[attr-defined]

    @scenario
    async def test_watch_from_a_compacted_revision_raises(self, kv: KV, h: Harness) -> None:
        old = await kv.put(h.prefix + "c", "1")
        await kv.put(h.prefix + "c", "2")
        now = await kv.put(h.prefix + "c", "3")
        await h.compact(kv, now)
        it = aiter(kv.watch(h.prefix, old))
        try:
            with pytest.raises(WatchCompacted) as caught:
                await collect(it, 1)
            assert caught.value.compact_revision >= now
        finally:
            await it.aclose()  # type: ignore[attr-defined]

    # -- leases ----------------------------------------------------------------------------------------------

    @scenario
    async def test_lease_lifecycle(self, kv: KV, h: Harness) -> None:
        lease = await kv.grant(20)
        assert lease > 0
        assert 0 < await kv.time_to_live(lease) <= 20
        rev = await kv.put(h.prefix + "l/a", "1", lease=lease)
        await kv.put(h.prefix + "l/b", "2", lease=lease)
        await kv.put(h.prefix + "l/keep", "3")
        got = await kv.get(h.prefix + "l/a")
        assert got is not None and got.lease == lease
        for _ in range(3):
            assert await kv.keep_alive(lease) >= 20
        assert (await kv.range(h.prefix)).revision == rev + 2, "keep-alives are not writes"
        await kv.revoke(lease)
        remaining = await kv.range(h.prefix + "l/")
        assert [x.key for x in remaining.kvs] == [h.prefix + "l/keep"]
        assert remaining.revision == rev + 3, "a revoke deletes its keys in one revision"
        assert await kv.keep_alive(lease) == 0
        assert await kv.time_to_live(lease) <= 0
        await kv.revoke(lease)  # a missing lease is not an error
        with pytest.raises(RegistryError):
            await kv.put(h.prefix + "l/c", "x", lease=lease)

    @scenario
    async def test_an_expired_lease_deletes_its_keys(self, kv: KV, h: Harness) -> None:
        short = await kv.grant(1)
        long = await kv.grant(60)
        try:
            await kv.put(h.prefix + "e/short", "1", lease=short)
            rev = await kv.put(h.prefix + "e/long", "2", lease=long)
            it = aiter(kv.watch(h.prefix + "e/", rev + 1))
            await h.let_time_pass(3)

            async def gone() -> bool:
                return await kv.get(h.prefix + "e/short") is None

            await eventually(gone)
            assert await kv.get(h.prefix + "e/long") is not None
            assert await kv.keep_alive(short) == 0
            assert _flat(await collect(it, 1)) == [("delete", h.prefix + "e/short", "")]
            await it.aclose()  # type: ignore[attr-defined]
        finally:
            await kv.revoke(long)

    @scenario
    async def test_keep_alive_holds_a_lease_past_its_ttl(self, kv: KV, h: Harness) -> None:
        lease = await kv.grant(2)
        try:
            await kv.put(h.prefix + "ka", "1", lease=lease)
            for _ in range(3):
                await h.let_time_pass(1)
                assert await kv.keep_alive(lease) >= 1
            assert await kv.get(h.prefix + "ka") is not None
        finally:
            await kv.revoke(lease)

    # -- close -----------------------------------------------------------------------------------------------

    @scenario
    async def test_close_ends_watches_and_refuses_calls(self, kv: KV, h: Harness) -> None:
        it = aiter(kv.watch(h.prefix, 0))
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.1)
        await kv.close()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(5):
                await pending
        with pytest.raises(RegistryError):
            await kv.get(h.prefix + "x")
