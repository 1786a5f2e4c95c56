"""Keeping Python's cyclic garbage collector off the leader's event loop.

A leader holds the whole registry: at 100,000 units that is millions of tracked objects, and a full
collection walks all of them with the interpreter lock held (measured: 1.3-1.5 s each, several a minute
while passes run), stalling keep-alives and watches. Nearly all of it is long-lived, acyclic data that
reference counting frees. So after each pass the young generations are collected (cheap: only what the pass
made) and every survivor is frozen: moved to the permanent generation that collections do not scan.

Winning leadership lists the registry and builds the first snapshot: a million new objects, during which
the collector would run again and again over a growing heap for nothing (measured: 0.9 s of the 6.6 s a
new leader takes at 100,000 units). ``pause`` turns it off for that stretch; the first ``settle`` turns it
back on, collects what the stretch left once and freezes the rest.

That stretch also leaves hundreds of megabytes of the C heap free but kept by the allocator (glibc returns
little on its own: measured 29 MB at 100,000 units), so the first ``settle`` after a ``pause`` also gives the
heap's free pages back to the system (``malloc_trim``, where the C library has it).

The cost is that a reference cycle that becomes garbage after being frozen is not reclaimed until
``release``, which unfreezes and collects once: called when leadership ends and the registry copy is
dropped (the heap is small again then).
"""

from __future__ import annotations

import gc

__all__ = ["pause", "release", "settle", "trim"]

class _State:
    paused = False  # the collector was turned off by ``pause`` (not by someone else)


def pause() -> None:
    """Turn the collector off until the next ``settle`` or ``release`` (a leader listing the registry)."""
    if gc.isenabled():
        gc.disable()
        _State.paused = True


def _resume() -> None:
    if _State.paused:
        gc.enable()
        _State.paused = False


def settle() -> None:
    """After a pass: collect what it left in the young generations, then freeze every survivor; after the
    first pass since a ``pause``, give the heap's free pages back."""
    first = _State.paused
    _resume()
    gc.collect(1)
    gc.freeze()
    if first:
        trim()


def trim() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot (not glibc)."""
    import ctypes  # noqa: PLC0415 - loaded by a leader only

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def release() -> None:
    """Unfreeze and collect everything (the registry copy was just dropped)."""
    _resume()
    gc.unfreeze()
    gc.collect()
