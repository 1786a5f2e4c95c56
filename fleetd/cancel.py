"""Cancellation that survives Python 3.11's TaskGroup.

When a task is cancelled from outside while a child of its TaskGroup fails during the wind-down (a watch
closing on a closed client, say), 3.11's TaskGroup raises the children's ExceptionGroup and the outside
cancellation is lost: a loop that catches that group with ``except*`` and retries would run on after
``cancel()``, and fleetd would not stop. Such loops call ``raise_if_cancelling()`` after the handler.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise CancelledError when the current task has a cancellation request pending."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
