"""Global fan-out: one ``Global=true`` unit reaches active on every simulated machine; repeated runs.

Target (issue 10): active on 100% of 5,000 machines in <= 10 s, 20 runs out of 20. Each run submits a new
global unit and times submit -> active on the last machine (the fake systemd's StartUnit), then waits until
every machine has published the unit's state, destroys the unit and waits until every machine has removed
its state before the next run (units left behind made each run's agents reconcile and resync one more unit).
One warm-up run comes first (reported apart). The machines run in worker processes (``bench.sim_worker``;
``BENCH_FANOUT_WORKERS``, default 2), and the first machine, whose engine candidate leads, in one of its own.
The simulator's CPU time (all its processes) and the leader elections during the runs are printed too.

    .venv/bin/python -m bench fanout [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bench.budgets import BUDGETS
from bench.cluster_sim import SimCluster, count_terms, unit, wait_until
from bench.report import Figure
from bench.sim_worker import ProcCluster, cpu_seconds
from devcluster.etcd import EtcdServer
from fleetd.model import MachineID, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry

__all__ = ["measure", "run"]

TARGET_S = 10.0
AGENT_TTL = 30.0  # fleetd's default agent_ttl: each machine keeps its lease alive every 10 s
After = Callable[[SimCluster, EtcdServer], Awaitable[list[Figure]]]
WORKERS = int(os.environ.get("BENCH_FANOUT_WORKERS", "2"))


class Cluster(Protocol):
    """What the fan-out reads of a cluster: a ``SimCluster`` or a ``ProcCluster``."""

    @property
    def registry(self) -> Registry: ...

    @property
    def kvs(self) -> list[EtcdKV]: ...

    active: dict[UnitName, dict[MachineID, float]]
    changed: asyncio.Event

    def cpu_seconds(self) -> float: ...


async def _published(
    cluster: Cluster, name: str, count: int, limit: float, *, gone: bool = False
) -> float | None:
    """Seconds until ``count`` states of ``name`` are in etcd (with ``gone``: at most ``count``), polled every
    0.2 s (0.05 s with ``gone``); None after ``limit`` s."""
    started = time.monotonic()
    prefix = cluster.registry.keys.unit_states(name)
    while time.monotonic() - started < limit:  # waiting for none left: one key says enough
        found = len((await cluster.kvs[0].range(prefix, limit=1 if gone and count == 0 else 0)).kvs)
        if (found <= count) if gone else (found >= count):
            return time.monotonic() - started
        await asyncio.sleep(0.05 if gone else 0.2)  # a read of one key is cheap; one of every state is not
    return None


async def _one(
    cluster: Cluster, name: str, machines: int, etcd_pid: int | None = None
) -> tuple[float, float, float, float | None, float]:
    """(seconds to active everywhere or inf, fraction reached, simulator CPU seconds, publish seconds,
    etcd CPU seconds)."""
    record = unit(name, is_global=True)
    etcd_cpu = cpu_seconds(etcd_pid)
    started, cpu = time.monotonic(), cluster.cpu_seconds()
    await cluster.registry.put_units([record])
    done = await wait_until(
        lambda: len(cluster.active.get(record[0].name, {})) >= machines, cluster.changed, 60
    )
    reached = cluster.active.get(record[0].name, {})
    elapsed = max(reached.values()) - started if done else float("inf")
    cpu_used = cluster.cpu_seconds() - cpu
    etcd_used = cpu_seconds(etcd_pid) - etcd_cpu
    published = await _published(cluster, name, machines, 60)
    await cluster.registry.destroy_units([name])
    cleared = await _published(cluster, name, 0, 60, gone=True)
    stamp = time.strftime("%H:%M:%S")
    print(f"fanout: {stamp} {name} destroyed, states removed in {cleared or float('nan'):.1f}s", flush=True)
    return elapsed, len(reached) / machines, cpu_used, published, etcd_used


async def measure(
    cluster: Cluster, machines: int, runs: int, budget: float, etcd_pid: int | None = None
) -> list[Figure]:
    """``runs`` runs after a warm-up, or fewer when ``budget`` seconds run out (the figure says so)."""
    terms: list[int] = []
    keys = cluster.registry.keys
    start = (await cluster.kvs[0].range(keys.schema)).revision
    watching = asyncio.create_task(count_terms(cluster.kvs[0], keys.leader, start, terms))
    started = time.monotonic()
    warm, reached, _, _, _ = await _one(cluster, "fanout-warmup.service", machines)
    first = sorted(cluster.active.get(UnitName("fanout-warmup.service"), {}).values())
    spread = [first[int(q * (len(first) - 1))] - (first[0] if first else 0.0) for q in (0.5, 0.9, 0.99)]
    print(f"fanout: warm-up run {warm:.2f}s ({reached:.1%} reached)", flush=True)
    times: list[float] = []
    worst_fraction = 1.0
    cpu: list[float] = []
    etcd_cpu: list[float] = []
    publish: list[float] = []
    for index in range(runs):
        if index and time.monotonic() - started > budget:
            print(f"fanout: time budget of {budget:.0f}s spent after {index} runs", flush=True)
            break
        elapsed, fraction, cpu_used, published, etcd_used = await _one(
            cluster, f"fanout-{index}.service", machines, etcd_pid
        )
        # the clock stops when every machine's state is listed (published), as fleetctl list-units shows it
        times.append(elapsed + published if published is not None else float("inf"))
        cpu.append(cpu_used)
        etcd_cpu.append(etcd_used)
        worst_fraction = min(worst_fraction, fraction)
        if published is not None:
            publish.append(published)
        print(
            f"fanout: run {index + 1}/{runs}: {fraction:.1%} active in {elapsed:.2f}s"
            f" (simulator CPU {cpu_used:.1f}s, etcd CPU {etcd_used:.1f}s;"
            f" states all published {published or float('nan'):.1f}s later)",
            flush=True,
        )
    watching.cancel()
    elections = len(set(terms))
    within = sum(t <= TARGET_S for t in times)
    skipped = f"; {runs - len(times)} runs not made (time budget)" if len(times) < runs else ""
    ordered = sorted(times)
    figures = [
        Figure(
            "fanout",
            f"Global unit active and published (listed) on 100% of {machines:,} machines within"
            f" {TARGET_S:.0f} s",
            f"{runs} runs out of {runs}",
            f"{within} of {len(times)}",
            within == runs,
            f"median {statistics.median(times):.1f} s, worst {ordered[-1]:.1f} s, least reached"
            f" {worst_fraction:.0%}; {elections} leader elections during the runs{skipped}",
        ),
        Figure(
            "fanout",
            f"simulator CPU per run ({WORKERS} worker processes drive the machines, agent + candidate each)"
            if WORKERS
            else "simulator CPU per run (one Python process drives every machine)",
            "",
            f"median {statistics.median(cpu):.1f} s CPU per {statistics.median(times):.1f} s wall",
            None,
        ),
        Figure(
            "fanout",
            f"etcd CPU per run ({machines:,} watch events, body reads and state writes)",
            "",
            f"median {statistics.median(etcd_cpu):.1f} s CPU",
            None,
        ),
    ]
    figures.append(
        Figure(
            "fanout",
            "warm-up run (the first global unit after the machines started; not counted above)",
            "",
            f"{warm:.1f} s to 100%" if warm < float("inf") else f"{reached:.1%} in 60 s",
            None,
            "after the first activation: p50 {:.1f} s, p90 {:.1f} s, p99 {:.1f} s".format(*spread),
        )
    )
    if publish:
        figures.append(
            Figure(
                "fanout",
                "then every machine's state published",
                "",
                f"median {statistics.median(publish):.1f} s after the last start",
                None,
            )
        )
    return figures


async def _run(machines: int, runs: int, clients: int, budget: float) -> list[Figure]:
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        cluster: SimCluster | ProcCluster
        if WORKERS:
            cluster = ProcCluster(
                etcd.endpoint, workers=WORKERS, ttl=AGENT_TTL, clients=clients, leader_apart=True
            )
        else:  # BENCH_FANOUT_WORKERS=0: every machine in this process, as the other benchmarks run them
            cluster = SimCluster(etcd.endpoint, ttl=AGENT_TTL, clients=clients)
        async with cluster:
            started = time.monotonic()
            await cluster.add_machines(machines)
            print(
                f"fanout: {machines} simulated machines up in {time.monotonic() - started:.1f}s"
                f" ({WORKERS} worker processes)",
                flush=True,
            )
            return await measure(cluster, machines, runs, budget, etcd.pid)


def run(quick: bool) -> list[Figure]:
    # the share less the machines' start (about 15 s): the warm-up and 20 runs of about 10 s each fit in it
    machines, runs, budget = (500, 3, 60.0) if quick else (5000, 20, BUDGETS["fanout"] - 15.0)
    clients = (4 if quick else 16) // max(1, WORKERS)
    return asyncio.run(_run(machines, runs, max(1, clients), budget))
