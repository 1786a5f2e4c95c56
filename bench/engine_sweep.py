"""Engine pass time in a sweep of machines x units, and the leader's event-loop stall.

For each machine count, a fresh key prefix on one etcd is filled (``bench.fill``: machine records under one
lease, units submitted and placed by the leading ``SimEngine``), then grown to each unit count. At each size
the leader is made to run real passes: the bench re-writes one unit body with the same text (a change in a
mirrored prefix that plans nothing), waits for the pass to end, and repeats. Each pass is timed by the engine
itself (``SimEngine.pass_seconds``: snapshot build from the mirror, plan, apply, body collection), so the
figures are the median and p99 over many passes, not a best-of. Meanwhile a periodic timer (every
``TICK`` s) measures the event loop's lag: how late each tick fires. The leader runs alone in this process
(no simulated agents), so the lag is the engine's own.

    .venv/bin/python -m bench engine_sweep [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass

from bench.budgets import BUDGETS
from bench.fill import Filled
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV

__all__ = ["Cell", "run"]

TICK = 0.01  # loop-lag timer period
STALL_TARGET_MS = 100.0
LARGE, FILL_S = 100_000, 25.0  # a cell this large takes about this long to fill (submit and place)


@dataclass(frozen=True, slots=True)
class Cell:
    machines: int
    units: int
    passes: int
    median_ms: float
    p99_ms: float
    lag_max_ms: float
    lag_p99_ms: float
    fill_s: float


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def _lag(samples: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        samples.append(max(0.0, loop.time() - due))


async def _passes(filled: Filled, count: int, budget: float) -> tuple[list[float], list[float]]:
    """Run up to ``count`` passes (fewer when ``budget`` s run out); (pass seconds, loop lags)."""
    engine, keys = filled.engine, filled.registry.keys
    mirror = engine.mirror
    assert mirror is not None
    body = next(iter(mirror.items(keys.bodies).values()))
    lags: list[float] = []
    timer = asyncio.create_task(_lag(lags))
    first, deadline = len(engine.pass_seconds), time.monotonic() + budget
    try:
        while len(engine.pass_seconds) - first < count and time.monotonic() < deadline:
            done = len(engine.pass_seconds)
            await filled.kv.put(body.key, body.value)  # same text, new revision: a pass that plans nothing
            while len(engine.pass_seconds) == done:
                if time.monotonic() > deadline + 60:
                    raise RuntimeError("the engine ran no pass after a change")
                await asyncio.sleep(0.002)
    finally:
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
    return engine.pass_seconds[first:], lags


async def _run(sizes: dict[int, tuple[int, ...]], passes: int, budget: float) -> tuple[list[Cell], list[str]]:
    cells: list[Cell] = []
    skipped: list[str] = []
    started = time.monotonic()
    order = [units for counts in sizes.values() for units in counts]  # every cell's units, in run order
    done = 0
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        kv = EtcdKV([etcd.endpoint], request_timeout=120.0)
        try:
            for machines, unit_counts in sizes.items():
                async with Filled(kv, f"/sweep-{machines}/", machines) as filled:
                    for units in unit_counts:
                        if time.monotonic() - started > budget:
                            done += 1
                            skipped.append(f"{machines:,} x {units:,}")
                            continue
                        fill_s = await filled.add_units(units - filled.units)
                        await asyncio.sleep(0.5)  # let the placement's last writes come back to the mirror
                        # the time left, less a fill for each large cell still to come, shared by the cells
                        # left (a small cell that needs less than its share leaves it to the next ones)
                        done += 1
                        later = sum(u >= LARGE for u in order[done:])
                        spare = budget - (time.monotonic() - started) - FILL_S * later
                        share = max(5.0, spare / (len(order) - done + 1))
                        seconds, lags = await _passes(filled, passes, share)
                        cell = Cell(
                            machines,
                            units,
                            len(seconds),
                            statistics.median(seconds) * 1000,
                            _p99(seconds) * 1000,
                            max(lags, default=0.0) * 1000,
                            _p99(lags) * 1000 if lags else 0.0,
                            fill_s,
                        )
                        cells.append(cell)
                        print(
                            f"engine_sweep: {machines} machines x {units} units: {cell.passes} passes,"
                            f" median {cell.median_ms:.0f} ms, p99 {cell.p99_ms:.0f} ms; loop lag max"
                            f" {cell.lag_max_ms:.0f} ms, p99 {cell.lag_p99_ms:.0f} ms (fill {fill_s:.0f}s)",
                            flush=True,
                        )
        finally:
            await kv.close()
    return cells, skipped


def figures(cells: list[Cell], skipped: list[str]) -> list[Figure]:
    out = [
        Figure(
            "engine_sweep",
            f"engine pass incl. snapshot build, {c.machines:,} machines x {c.units:,} units",
            "",
            f"median {c.median_ms:.0f} ms, p99 {c.p99_ms:.0f} ms",
            None,
            f"{c.passes} passes",
        )
        for c in cells
    ]
    if cells:
        big = max(cells, key=lambda c: (c.units, c.machines))
        out.append(
            Figure(
                "engine_sweep",
                f"leader event-loop stall during passes, {big.machines:,} machines x {big.units:,} units"
                f" (lag of a {TICK * 1000:.0f} ms timer)",
                f"max <= {STALL_TARGET_MS:.0f} ms",
                f"max {big.lag_max_ms:.0f} ms, p99 {big.lag_p99_ms:.0f} ms",
                big.lag_max_ms <= STALL_TARGET_MS,
                f"over {big.passes} passes",
            )
        )
    if skipped:
        out.append(Figure("engine_sweep", "sizes not measured (time budget)", "", ", ".join(skipped), None))
    return out


def run(quick: bool) -> list[Figure]:
    if quick:
        sizes: dict[int, tuple[int, ...]] = {100: (1_000, 2_000)}
        passes, budget = 10, 60.0
    else:
        sizes = {100: (1_000, 10_000), 1_000: (1_000, 10_000, 100_000), 5_000: (100_000,)}
        passes, budget = 60, BUDGETS["engine_sweep"] - 5.0
    return figures(*asyncio.run(_run(sizes, passes, budget)))


if __name__ == "__main__":
    import sys

    for f in run("--quick" in sys.argv):
        print(f.line())
