"""fleetd.heap: the collector paused while a leader lists, back on after its first pass, frozen survivors."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fleetd import heap


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_pause_then_settle_turns_the_collector_back_on_and_freezes_survivors() -> None:
    heap.pause()
    assert not gc.isenabled()
    kept = [[i] for i in range(1000)]
    heap.settle()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)


def test_release_unfreezes_and_turns_the_collector_back_on() -> None:
    heap.pause()
    heap.release()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    heap.pause()
    heap.settle()
    assert not gc.isenabled()
