"""The one retry policy (on tenacity): which failed requests may be sent again, and how long to wait.

What may be retried depends on what a repeat could do, never on where the call sits:

- ``Safety.REPEATABLE``: reads, keep-alives, lease revokes (a second revoke finds nothing) and Txns guarded
  by compares (if the first one was applied and only its reply was lost, the repeat fails its compare and
  reads as a conflict, which the caller re-plans from fresh data). Retried on any ``RegistryUnavailable``.
- ``Safety.ONCE``: plain writes (Put, DeleteRange, LeaseGrant, an unguarded Txn). A lost reply leaves it
  unknown whether etcd applied them, so they are retried only when the request was never sent
  (``RequestNotSent``: no connection could be made); otherwise the error goes to the caller.

``attempts(...)`` is a tenacity ``AsyncRetrying`` for one call (the etcd client's failover over its
endpoints, an agent registering until it succeeds); ``Backoff`` gives the same exponential delays to loops
that wait between passes instead of repeating one call. Sleep is injected everywhere, so tests run without
waiting.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)
from tenacity.stop import StopBaseT

from fleetd.errors import RegistryUnavailable, RequestNotSent

__all__ = ["Backoff", "Safety", "Sleep", "attempts", "may_retry"]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Safety(enum.Enum):
    REPEATABLE = "repeatable"  # a repeat cannot apply anything twice
    ONCE = "once"  # a repeat after a lost reply might


def may_retry(safety: Safety, error: BaseException) -> bool:
    """Whether a request of ``safety`` that failed with ``error`` may be sent again."""
    if isinstance(error, RequestNotSent):
        return True
    return safety is Safety.REPEATABLE and isinstance(error, RegistryUnavailable)


def _wait(initial: float, maximum: float) -> wait_exponential:
    """``initial``, doubling, capped at ``maximum`` (tenacity counts attempts from 1)."""
    return wait_exponential(multiplier=initial, exp_base=2, min=initial, max=max(initial, maximum))


class Backoff:
    """Delays for loops: ``initial``, doubling, capped at ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self._wait = _wait(initial, self.maximum)
        self._state = RetryCallState(AsyncRetrying(), None, (), {})  # only its attempt count is read

    def next(self) -> float:
        delay = float(self._wait(self._state))
        self._state.attempt_number += 1
        return delay

    def reset(self) -> None:
        self._state.attempt_number = 1


def attempts(
    retry_on: Callable[[BaseException], bool],
    *,
    tries: int | None = None,
    initial: float = 0.0,
    maximum: float = 0.0,
    sleep: Sleep = asyncio.sleep,
    what: str = "",
) -> AsyncRetrying:
    """Attempts of one call: ``async for attempt in attempts(...): with attempt: ...``.

    Retries while ``retry_on(error)`` holds, at most ``tries`` times in all (None: until it succeeds),
    waiting ``initial`` doubling to ``maximum`` between tries (0: at once); the last error is raised as is.
    With ``what``, each retry is logged at WARNING with its delay.
    """
    stop: StopBaseT = stop_never if tries is None else stop_after_attempt(tries)

    def log(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning("%s failed: %s; retrying in %.1fs", what, error, delay)

    return AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=_wait(initial, maximum) if initial > 0 else wait_exponential(multiplier=0, max=0),
        retry=retry_if_exception(retry_on),
        before_sleep=log if what else None,
        reraise=True,
    )
