"""No herd, measured by etcd: watch events per non-global unit start at 10 and at N machines.

Each simulated machine is what fleetd runs by default: the production agent and an engine candidate
(``bench.cluster_sim``). etcd's own counters come from its ``/metrics``: ``etcd_debugging_mvcc_events_total``
(watch events sent to watchers) and ``etcd_debugging_mvcc_watcher_total`` (watchers held). One unit is
submitted at a time; its clock stops when its state is listed as active through
``Registry.list_unit_states`` (what ``fleetctl list-units`` shows; those reads are ranges and Txns, which
send no watch events). The anchor is the same workload with standby mirrors switched back on
(``bench.engines.MirroringEngine``: every candidate keeps the full registry mirror, as before issue 15).

    .venv/bin/python -m bench herd [--quick]
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass

from bench.cluster_sim import SimCluster, listed, unit
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.engine.engine import mirrored_prefixes
from fleetd.model import UnitName
from fleetd.registry.keyspace import Keyspace

__all__ = ["Herd", "measure", "metric", "run"]

AGENT_TTL = 30.0  # fleetd's default
TARGET_EVENTS = 8.0
TARGET_WATCHERS = 3.0
MIRRORED_PREFIXES = len(mirrored_prefixes(Keyspace()))  # the leader's mirror: one watch per prefix


def metric(endpoint: str, name: str) -> float:
    """One un-labelled counter or gauge from etcd's ``/metrics``."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if not found:
        raise RuntimeError(f"etcd does not export {name}")
    return float(found.group(1))


@dataclass(frozen=True, slots=True)
class Herd:
    machines: int
    starts: int
    events_per_start: float
    watchers_per_standby: float  # (watchers the cluster added - the leader's mirror) / machines
    latency_p50: float  # submit -> listed active, seconds
    up_seconds: float


async def _quiet(endpoint: str, window: float = 1.0, limit: float = 30.0) -> None:
    """Until etcd sends no watch event for ``window`` s (the cluster finished reacting)."""
    deadline = time.monotonic() + limit
    last = metric(endpoint, "etcd_debugging_mvcc_events_total")
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        now = metric(endpoint, "etcd_debugging_mvcc_events_total")
        if now == last:
            return
        last = now


async def _released(endpoint: str, watchers: float, limit: float = 30.0) -> None:
    """Until etcd holds no more than ``watchers`` watchers (a closed cluster's streams are gone)."""
    deadline = time.monotonic() + limit
    while metric(endpoint, "etcd_debugging_mvcc_watcher_total") > watchers:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def measure(
    etcd: EtcdServer, machines: int, starts: int, *, standby_mirrors: bool = False, clients: int = 8
) -> Herd:
    endpoint = etcd.endpoint
    baseline = metric(endpoint, "etcd_debugging_mvcc_watcher_total")
    kind = "mirrors" if standby_mirrors else "standby"
    prefix = f"/herd-{machines}-{kind}/"
    async with SimCluster(
        endpoint, ttl=AGENT_TTL, clients=clients, prefix=prefix, standby_mirrors=standby_mirrors
    ) as cluster:
        began = time.monotonic()
        await cluster.add_machines(machines)
        up = time.monotonic() - began
        await _quiet(endpoint)
        watchers = metric(endpoint, "etcd_debugging_mvcc_watcher_total") - baseline
        before = metric(endpoint, "etcd_debugging_mvcc_events_total")
        latencies: list[float] = []
        for index in range(starts):
            name = UnitName(f"herd-{index}.service")
            submitted = time.monotonic()
            await cluster.registry.put_units([unit(name)])
            seen = await listed(cluster.registry, [name], 60)
            if name not in seen:
                raise RuntimeError(f"{name} was not listed active within 60 s on {machines} machines")
            latencies.append(seen[name] - submitted)
        await _quiet(endpoint)
        events = metric(endpoint, "etcd_debugging_mvcc_events_total") - before
    return Herd(
        machines,
        starts,
        events / starts,
        (watchers - MIRRORED_PREFIXES) / machines,
        statistics.median(latencies),
        up,
    )


async def _run(small: int, large: int, starts: int, anchor_large: int) -> list[Figure]:
    """Ours at ``small`` and ``large`` machines; the anchor at ``small`` and ``anchor_large`` (every standby
    mirror lives in this one process: 5,000 of them took 4 GB and minutes)."""
    results: dict[tuple[int, bool], Herd] = {}
    with EtcdServer() as etcd:
        idle = metric(etcd.endpoint, "etcd_debugging_mvcc_watcher_total")
        for mirrors in (False, True):
            for size in (small, anchor_large if mirrors else large):
                await _released(etcd.endpoint, idle)
                got = await measure(etcd, size, starts, standby_mirrors=mirrors)
                results[size, mirrors] = got
                print(
                    f"herd: {size} machines{' (standby mirrors)' if mirrors else ''}: up in"
                    f" {got.up_seconds:.0f}s, {got.events_per_start:.1f} watch events/start,"
                    f" {got.watchers_per_standby:.2f} watchers/standby, listed p50"
                    f" {got.latency_p50 * 1000:.0f} ms",
                    flush=True,
                )
    ours_small, ours_large = results[small, False], results[large, False]
    anchor_small, anchor = results[small, True], results[anchor_large, True]
    equal = ours_large.events_per_start <= ours_small.events_per_start + 1
    return [
        Figure(
            "herd",
            f"watch events per non-global unit start (until listed active), {small} vs {large:,} machines,"
            f" each an agent + engine candidate; {starts} starts per size",
            f"equal, <= {TARGET_EVENTS:.0f} at both",
            f"{ours_small.events_per_start:.1f} vs {ours_large.events_per_start:.1f}",
            equal and ours_large.events_per_start <= TARGET_EVENTS,
            f"anchor, standby mirrors on: {anchor_small.events_per_start:.1f} at {small} vs"
            f" {anchor.events_per_start:.1f} at {anchor_large:,}; etcd_debugging_mvcc_events_total",
        ),
        Figure(
            "herd",
            f"watchers per standby fleetd, {large:,} machines (etcd_debugging_mvcc_watcher_total added by"
            f" the cluster, less the leader's {MIRRORED_PREFIXES} mirror watches, / machines)",
            f"<= {TARGET_WATCHERS:.0f}",
            f"{ours_large.watchers_per_standby:.2f}",
            ours_large.watchers_per_standby <= TARGET_WATCHERS,
            f"anchor, standby mirrors on: {anchor.watchers_per_standby:.2f} at {anchor_large:,} machines",
        ),
        Figure(
            "herd",
            f"submit -> listed active, one unit at a time, {small} / {large:,} machines",
            "",
            f"p50 {ours_small.latency_p50 * 1000:.0f} / {ours_large.latency_p50 * 1000:.0f} ms",
            None,
            f"anchor: {anchor_small.latency_p50 * 1000:.0f} / {anchor.latency_p50 * 1000:.0f} ms at"
            f" {small} / {anchor_large:,}; {large:,} fleetds up in {ours_large.up_seconds:.0f} s",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    small, large, starts, anchor = (10, 100, 3, 100) if quick else (10, 2_000, 10, 1_000)
    return asyncio.run(_run(small, large, starts, anchor))


if __name__ == "__main__":
    import sys

    for f in run("--quick" in sys.argv):
        print(f.line())
