"""A cancelled election or mirror ends even when its children fail while winding down (Python 3.11's
TaskGroup then raised their errors and dropped the outside cancellation), and a child's own failure is
handled without leaving a stale cancellation behind (``fleetd.cancel.first_failure``)."""

from __future__ import annotations

import asyncio
import contextlib

from fleetd.cancel import all_or_first_failure, cancel_and_wait
from fleetd.engine.election import Election
from fleetd.errors import RegistryError
from fleetd.registry.memory import MemoryKV
from fleetd.registry.mirror import Mirror


async def _cancel_after_close(kv: MemoryKV, task: asyncio.Task[None]) -> None:
    await kv.close()  # the children now fail with KVClosed as they wind down
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 3)  # TimeoutError here: the cancellation was lost
    assert task.cancelled()


def test_an_election_cancelled_while_its_client_closes_ends() -> None:
    async def main() -> None:
        kv = MemoryKV()
        election = Election(kv, "/leader", "m1", 1.0)
        task = asyncio.create_task(election.run())
        async with asyncio.timeout(3):
            while not election.is_leader:  # noqa: ASYNC110 - the election has no event for "won"
                await asyncio.sleep(0.01)
        await _cancel_after_close(kv, task)

    asyncio.run(main())


def test_a_mirror_cancelled_while_its_client_closes_ends() -> None:
    async def main() -> None:
        kv = MemoryKV()
        mirror = Mirror(kv, ["/a/", "/b/"], retry_delay=0.01)
        task = asyncio.create_task(mirror.run())
        await mirror.ready.wait()
        await _cancel_after_close(kv, task)

    asyncio.run(main())


def test_all_or_first_failure_returns_every_result_in_order_or_the_first_error_as_it_is() -> None:
    async def value(result: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return result

    async def fail(delay: float) -> int:
        await asyncio.sleep(delay)
        raise RegistryError("etcd unavailable")

    async def main() -> None:
        assert await all_or_first_failure(value(1, 0.02), value(2, 0.0), value(3, 0.01)) == [1, 2, 3]
        slow = asyncio.ensure_future(value(4, 30.0))

        async def waits() -> int:
            return await slow

        try:
            await all_or_first_failure(waits(), fail(0.01))
        except RegistryError as exc:  # not an ExceptionGroup
            assert str(exc) == "etcd unavailable"
        else:
            raise AssertionError("the failure was not raised")
        assert slow.cancelled(), "a sibling still runs after the failure"
        outer = asyncio.ensure_future(all_or_first_failure(value(5, 30.0), value(6, 30.0)))
        await asyncio.sleep(0.01)
        outer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(outer, 3)  # TimeoutError here: the cancellation was lost
        assert outer.cancelled()

    asyncio.run(main())


async def _slow_to_stop() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0.05)  # winds down over a few loop turns, as a mirror closing its watches does


def test_a_caller_cancelled_while_it_waits_for_a_cancelled_task_stays_cancelled() -> None:
    # the engine stopped at the moment its term ended (waiting for its mirror to stop) must stop: with
    # suppress(CancelledError) around the wait, that cancellation was swallowed and the engine ran on
    async def caller(inner: asyncio.Task[None], waiting: asyncio.Event) -> None:
        waiting.set()
        await cancel_and_wait(inner)
        await asyncio.Event().wait()  # reached only if the cancellation was lost

    async def main() -> None:
        inner = asyncio.create_task(_slow_to_stop())
        await asyncio.sleep(0)
        waiting = asyncio.Event()
        outer = asyncio.create_task(caller(inner, waiting))
        await waiting.wait()
        await asyncio.sleep(0.01)  # the caller is inside cancel_and_wait, the inner task winding down
        outer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(outer, 3)  # TimeoutError here: the cancellation was lost
        assert outer.cancelled()
        await asyncio.wait([inner])
        assert inner.cancelled()

    asyncio.run(main())


def test_cancel_and_wait_raises_what_the_task_raised_other_than_its_cancellation() -> None:
    async def fails_on_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RegistryError("closing failed")

    async def main() -> None:
        task = asyncio.create_task(fails_on_stop())
        await asyncio.sleep(0)
        try:
            await cancel_and_wait(task)
        except RegistryError as exc:
            assert str(exc) == "closing failed"
        else:
            raise AssertionError("the task's failure was not raised")
        quiet = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        await cancel_and_wait(quiet)
        assert quiet.cancelled()

    asyncio.run(main())
