"""The retry policy (fleetd.retry): what may be sent again, and the delays, with an injected sleep."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.errors import CASConflict, RegistryError, RegistryUnavailable, RequestNotSent
from fleetd.retry import Backoff, Safety, attempts, may_retry


@pytest.mark.parametrize(
    ("safety", "error", "retried"),
    [
        pytest.param(Safety.REPEATABLE, RegistryUnavailable("timeout"), True, id="a read after a timeout"),
        pytest.param(Safety.REPEATABLE, RequestNotSent("refused"), True, id="a read never sent"),
        pytest.param(Safety.ONCE, RequestNotSent("refused"), True, id="a write never sent"),
        pytest.param(Safety.ONCE, RegistryUnavailable("lost"), False, id="a write whose reply was lost"),
        pytest.param(Safety.REPEATABLE, CASConflict("compare"), False, id="a conflict is an answer"),
        pytest.param(Safety.REPEATABLE, RegistryError("refused"), False, id="etcd refused it"),
        pytest.param(Safety.REPEATABLE, ValueError("bug"), False, id="a bug is not retried"),
    ],
)
def test_what_may_be_sent_again(safety: Safety, error: BaseException, retried: bool) -> None:
    assert may_retry(safety, error) is retried


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 1.0
    assert [Backoff(3.0, 3.0).next() for _ in range(2)] == [3.0, 3.0]  # a steady delay


class Flaky:
    """Fails with each of ``errors`` in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def _call(call: Flaky, safety: Safety, tries: int | None, slept: list[float], **kw: float) -> str:
    async def sleep(delay: float) -> None:
        slept.append(delay)

    async for attempt in attempts(lambda e: may_retry(safety, e), tries=tries, sleep=sleep, **kw):
        with attempt:
            return await call()
    raise AssertionError("unreachable")


def test_a_repeatable_call_is_retried_with_growing_delays_until_it_succeeds() -> None:
    slept: list[float] = []
    call = Flaky(RegistryUnavailable("a"), RegistryUnavailable("b"), RegistryUnavailable("c"))
    assert asyncio.run(_call(call, Safety.REPEATABLE, None, slept, initial=1.0, maximum=3.0)) == "done"
    assert call.calls == 4 and slept == [1.0, 2.0, 3.0]


def test_failover_tries_each_endpoint_once_without_waiting_and_raises_the_last_error() -> None:
    slept: list[float] = []
    last = RegistryUnavailable("third endpoint")
    call = Flaky(RegistryUnavailable("first"), RegistryUnavailable("second"), last)
    with pytest.raises(RegistryUnavailable) as raised:
        asyncio.run(_call(call, Safety.REPEATABLE, 3, slept))
    assert raised.value is last and call.calls == 3 and slept == [0.0, 0.0]


def test_a_write_is_not_sent_again_once_it_may_have_been_applied() -> None:
    slept: list[float] = []
    call = Flaky(RequestNotSent("refused"), RegistryUnavailable("reply lost"))
    with pytest.raises(RegistryUnavailable, match="reply lost"):
        asyncio.run(_call(call, Safety.ONCE, 3, slept))
    assert call.calls == 2  # sent again after "never sent", not after the lost reply
