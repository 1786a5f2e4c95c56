"""Running sibling loops whose first failure the caller handles, with cancellation that always propagates.

Python 3.11's TaskGroup is unreliable for a caller that catches its children's errors and retries: when the
task is cancelled from outside while a child fails during the wind-down, the TaskGroup raises the child's
error and the cancellation is lost (the loop runs on after ``cancel()``; fleetd would not stop); and when a
child fails while the group is already exiting, a stale cancellation request is left on the task.
``first_failure`` has neither problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["all_or_first_failure", "cancel_and_wait", "first_failure"]


async def first_failure(*coroutines: Coroutine[Any, Any, object]) -> BaseException | None:
    """Run ``coroutines`` as tasks until the first one ends; cancel the others and wait for them to go.

    Returns what the first to end raised (None when it returned). A cancellation of the caller propagates,
    after every child is gone.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(task for task in tasks if task in done)
    return None if first.cancelled() else first.exception()


async def all_or_first_failure(*coroutines: Coroutine[Any, Any, T]) -> list[T]:
    """Run ``coroutines`` as tasks until all have returned (their results, in order), or until one raises:
    then cancel the others, wait for them to go, and raise that error as it is. A cancellation of the caller
    propagates, after every child is gone."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it is done; then raise what it raised, unless it was its cancellation.

    ``with suppress(CancelledError): await task`` loses a cancellation of the caller that arrives while it
    waits (the caller's CancelledError surfaces at the same ``await`` and is suppressed with the task's): a
    loop stopped at that moment runs on. Here the caller's own cancellation propagates; the task, already
    cancelled, ends by itself."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()
