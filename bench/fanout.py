"""Global fan-out: one ``Global=true`` unit reaches active on every simulated machine; repeated runs.

Target (issue 10): active on 100% of 5,000 machines in <= 10 s, 20 runs out of 20. Each run submits a new
global unit and times submit -> active on the last machine (the fake systemd's StartUnit), then waits until
every machine has published the unit's state before the next run. One warm-up run comes first (reported
apart). The simulator's own CPU time is printed too: all machines share one Python process.

    .venv/bin/python -m bench fanout [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.cluster_sim import SimCluster, unit, wait_until
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.model import UnitName

__all__ = ["measure", "run"]

TARGET_S = 10.0
AGENT_TTL = 30.0  # fleetd's default agent_ttl: each machine keeps its lease alive every 10 s
After = Callable[[SimCluster, EtcdServer], Awaitable[list[Figure]]]


async def _published(cluster: SimCluster, name: str, count: int, limit: float) -> float | None:
    """Seconds until ``count`` states of ``name`` are in etcd (polled every 0.2 s), None after ``limit`` s."""
    started = time.monotonic()
    prefix = cluster.registry.keys.unit_states(name)
    while time.monotonic() - started < limit:
        if len((await cluster.kvs[0].range(prefix)).kvs) >= count:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one(
    cluster: SimCluster, name: str, machines: int, etcd_pid: int | None = None
) -> tuple[float, float, float, float | None, float]:
    """(seconds to active everywhere or inf, fraction reached, simulator CPU seconds, publish seconds,
    etcd CPU seconds)."""
    record = unit(name, is_global=True)
    etcd_cpu = cpu_seconds(etcd_pid)
    started, cpu = time.monotonic(), time.process_time()
    await cluster.registry.put_units([record])
    done = await wait_until(
        lambda: len(cluster.active.get(record[0].name, {})) >= machines, cluster.changed, 60
    )
    reached = cluster.active.get(record[0].name, {})
    elapsed = max(reached.values()) - started if done else float("inf")
    cpu_used = time.process_time() - cpu
    etcd_used = cpu_seconds(etcd_pid) - etcd_cpu
    published = await _published(cluster, name, machines, 60)
    return elapsed, len(reached) / machines, cpu_used, published, etcd_used


async def measure(
    cluster: SimCluster, machines: int, runs: int, budget: float, etcd_pid: int | None = None
) -> list[Figure]:
    """``runs`` runs after a warm-up, or fewer when ``budget`` seconds run out (the figure says so)."""
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
        times.append(elapsed)
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
    within = sum(t <= TARGET_S for t in times)
    skipped = f"; {runs - len(times)} runs not made (time budget)" if len(times) < runs else ""
    ordered = sorted(times)
    figures = [
        Figure(
            "fanout",
            f"Global unit active on 100% of {machines:,} machines within {TARGET_S:.0f} s",
            f"{runs} runs out of {runs}",
            f"{within} of {len(times)}",
            within == runs,
            f"median {statistics.median(times):.1f} s, worst {ordered[-1]:.1f} s, least reached"
            f" {worst_fraction:.0%}{skipped}",
        ),
        Figure(
            "fanout",
            "simulator CPU per run (one Python process drives every machine)",
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


async def _run(machines: int, runs: int, clients: int, budget: float, after: Sequence[After]) -> list[Figure]:
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        async with SimCluster(etcd.endpoint, ttl=AGENT_TTL, clients=clients) as cluster:
            started = time.monotonic()
            await cluster.add_machines(machines)
            print(
                f"fanout: {machines} simulated machines up in {time.monotonic() - started:.1f}s", flush=True
            )
            figures = await measure(cluster, machines, runs, budget, etcd.pid)
            for step in after:
                figures += await step(cluster, etcd)
            return figures


def run(quick: bool, after: Sequence[After] = ()) -> list[Figure]:
    machines, runs, budget = (500, 3, 60.0) if quick else (5000, 20, 120.0)
    return asyncio.run(_run(machines, runs, 4 if quick else 16, budget, after))
