"""Start latency on real systemd: from target state ``launched`` written to ActiveState=active on the machine.

A local cluster of real systemd-nspawn machines running fleetd (devcluster, cluster ``benchlat``) gets
units submitted in target state ``loaded``; once each is loaded on its machine, its target is set to
``launched`` and the time until the machine's agent publishes ``active`` is measured, one unit at a time.
The published state is what ``fleetctl start`` waits for, so the figure includes the engine's hop, the
agent's start and the state publication (an upper bound of the systemd-side latency).

    .venv/bin/python -m bench start_latency --no-write
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

from bench.report import Figure
from devcluster.cluster import bring_down, bring_up
from fleetd.model import TargetState, UnitName, UnitState
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.keyspace import UnitRecord
from fleetd.registry.registry import Registry
from fleetd.unitfile import UnitFile

__all__ = ["run"]

CLUSTER = "benchlat"
PREFIX = "/_coreos.com/fleet/"
TIMEOUT = 30.0


async def _until(registry: Registry, names: Sequence[str], done: str) -> None:
    """Wait (one watch) until every named unit has a published state satisfying ``done``."""
    async with asyncio.timeout(TIMEOUT):
        async for states in registry.watch_unit_states(names):
            by_name: dict[str, UnitState] = {s.name: s for s in states}
            if all(n in by_name and _satisfies(by_name[n], done) for n in names):
                return


def _satisfies(state: UnitState, done: str) -> bool:
    if done == "loaded":
        return state.state is TargetState.LOADED
    return state.state is TargetState.LAUNCHED and state.active_state == "active"


async def _measure(endpoint: str, count: int) -> list[float]:
    kv = EtcdKV([endpoint], request_timeout=5.0)
    registry = Registry(kv, PREFIX)
    names = [f"latency-{i}.service" for i in range(count)]
    text = "[Unit]\nDescription=latency probe\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    unit = UnitFile.from_text(text)
    try:
        await registry.put_units(
            [(UnitRecord(UnitName(n), unit.hash, False, TargetState.LOADED), unit.canonical) for n in names]
        )
        await _until(registry, names, "loaded")
        latencies = []
        for name in names:
            began = time.monotonic()
            await registry.set_target_states({name: TargetState.LAUNCHED})
            await _until(registry, [name], "active")
            latencies.append(time.monotonic() - began)
        await registry.destroy_units(names)
        return latencies
    finally:
        await kv.close()


def run(quick: bool) -> list[Figure]:
    machines, count = (1, 5) if quick else (2, 40)
    state, _ = bring_up(CLUSTER, machines, log=lambda line: print(line, flush=True))
    try:
        latencies = asyncio.run(_measure(state.endpoint, count))
    finally:
        bring_down(CLUSTER)
    p50 = statistics.median(latencies)
    worst = max(latencies)
    print("start_latency: seconds per start:", " ".join(f"{x:.3f}" for x in latencies), flush=True)
    print(f"start_latency: {count} units, p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms", flush=True)
    return [
        Figure(
            "start_latency",
            f"target launched written -> active published, real systemd ({machines} nspawn machines)",
            "p50 <= 1 s",
            f"p50 {p50 * 1000:.0f} ms",
            p50 <= 1.0,
            f"max {worst * 1000:.0f} ms over {count} starts; the original took 2-5 s",
        )
    ]
