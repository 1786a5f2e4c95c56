"""Keeping Python's cyclic garbage collector off the leader's event loop.

A leader holds the whole registry: at 100,000 units that is millions of tracked objects, and a full
collection walks all of them with the interpreter lock held (measured: 1.3-1.5 s each, several a minute
while passes run), stalling keep-alives and watches. Nearly all of it is long-lived, acyclic data that
reference counting frees. So after each pass the young generations are collected (cheap: only what the pass
made) and every survivor is frozen: moved to the permanent generation that collections do not scan.

The cost is that a reference cycle that becomes garbage after being frozen is not reclaimed until
``release``, which unfreezes and collects once: called when leadership ends and the registry copy is
dropped (the heap is small again then).
"""

from __future__ import annotations

import gc

__all__ = ["release", "settle"]


def settle() -> None:
    """After a pass: collect what it left in the young generations, then freeze every survivor."""
    gc.collect(1)
    gc.freeze()


def release() -> None:
    """Unfreeze and collect everything (the registry copy was just dropped)."""
    gc.unfreeze()
    gc.collect()
