"""fleetd.heap: the collector paused while a leader lists, back on after its first pass, frozen survivors."""

from __future__ import annotations

import gc
import subprocess
import sys
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


def test_the_first_settle_after_a_pause_gives_free_heap_back_and_later_ones_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(True) or True)
    heap.pause()
    heap.settle()
    heap.settle()
    assert trims == [True]


HOLES = """
from fleetd import heap

def rss_kb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])

# 200 MB in blocks below the mmap threshold (on the heap), each followed by a small block that stays: once
# the big ones are freed, the heap is full of holes that free() alone does not give back
pairs = [(bytearray(100_000), bytearray(1_000)) for _ in range(2_000)]
kept = [small for _, small in pairs]
del pairs
before = rss_kb()
print(heap.trim(), before, rss_kb(), len(kept))
"""


def test_trim_returns_free_heap_pages_to_the_system() -> None:
    """In a new interpreter (the heap of this one depends on the tests run before)."""
    out = subprocess.run(
        [sys.executable, "-c", HOLES], capture_output=True, text=True, timeout=60, check=True
    )
    trimmed, before, after, kept = out.stdout.split()
    assert trimmed == "True" and kept == "2000"
    assert int(after) < int(before) - 100_000, f"malloc_trim gave back too little: {before} -> {after} kB"
