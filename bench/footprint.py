"""etcd footprint: the database size after compaction and defragmentation with a large cluster's keyspace.

Targets: <= 250 MB with 100,000 units on 5,000 machines (issue 10); those units submitted -> active ->
published in <= 120 s (issue 15; submitting stops at a time budget, and the figure says how far it got).
The keyspace is the real one: machines registered by simulated fleetds (bench.cluster_sim: agent + engine
candidate each), units submitted, scheduled by the leader, started by the agents, and every unit's state
published. Then: compact at the current revision, defragment, and read the
DB size from etcd's status (``etcdctl endpoint status``) and the data dir.

    .venv/bin/python -m bench footprint [--quick]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from functools import partial

from bench.cluster_sim import SimCluster, unit, wait_until
from bench.fanout import AGENT_TTL, After
from bench.report import Figure
from devcluster.etcd import EtcdServer

__all__ = ["db_size", "etcdctl", "run", "step"]

TARGET_MB = 250.0
TARGET_S = 120.0  # issue 15: 100,000 units on 5,000 machines submitted -> active -> published
CHUNK = 10_000  # units submitted at a time
ETCDCTL = "/usr/bin/etcdctl"


def etcdctl(etcd: EtcdServer, *args: str) -> str:
    out = subprocess.run(
        [ETCDCTL, "--endpoints", etcd.endpoint, "--command-timeout", "300s", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return out.stdout


def db_size(etcd: EtcdServer) -> tuple[int, int]:
    """(DB size from etcd's status, bytes of the bbolt file in the data dir)."""
    status = json.loads(etcdctl(etcd, "endpoint", "status", "-w", "json"))
    reported = int(status[0]["Status"]["dbSize"])
    on_disk = (etcd.data_dir / "data" / "member" / "snap" / "db").stat().st_size
    return reported, on_disk


def _count(etcd: EtcdServer, prefix: str) -> int:
    """Keys under ``prefix`` (a range with limit 1 still reports the full count)."""
    reply = json.loads(etcdctl(etcd, "get", prefix, "--prefix", "--limit", "1", "--keys-only", "-w", "json"))
    return int(reply.get("count", 0))


async def _poll(check: Callable[[], bool], limit: float) -> bool:
    """Poll a blocking ``check`` (an etcdctl call) every second until it holds; False after ``limit``."""
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(1.0)
    return True


def _reached(cluster: SimCluster, starts: int) -> bool:
    return cluster.starts >= starts


async def measure(
    cluster: SimCluster, etcd: EtcdServer, units: int, budget: float = float("inf")
) -> list[Figure]:
    """``units`` units submitted in chunks, or fewer when ``budget`` s run out (the figures say so)."""
    wanted = units
    machines = len(cluster.machines)
    keys = cluster.registry.keys
    leftovers = [record.name for record in await cluster.registry.list_units()]
    if leftovers:  # e.g. the fan-out's global units: their states would double the keyspace
        await cluster.registry.destroy_units(leftovers)
        await _poll(lambda: _count(etcd, keys.states) == 0, 300)
    base = cluster.starts
    started = time.monotonic()
    submitted = 0.0
    done = True
    for first in range(0, units, CHUNK):  # in steps, so the one simulator process keeps every lease alive
        if time.monotonic() - started > budget:
            units = first
            break
        last = min(first + CHUNK, units)
        began = time.monotonic()
        await cluster.registry.put_units([unit(f"fp-{i:06}.service") for i in range(first, last)])
        submitted += time.monotonic() - began
        reached = await wait_until(partial(_reached, cluster, base + last), cluster.changed, 300)
        done = done and reached
    active = time.monotonic() - started
    published = await _poll(lambda: _count(etcd, keys.states) >= units, 600)
    settled = time.monotonic() - started
    print(
        f"footprint: {units} units on {machines} machines: submitted {submitted:.1f}s, all active"
        f" {active:.1f}s ({done}), states published {settled:.1f}s ({published})",
        flush=True,
    )
    before, _ = await asyncio.to_thread(db_size, etcd)
    revision = (await cluster.kvs[0].range(keys.schema)).revision
    await asyncio.to_thread(etcdctl, etcd, "compact", str(revision), "--physical")
    await asyncio.to_thread(etcdctl, etcd, "defrag")
    reported, on_disk = await asyncio.to_thread(db_size, etcd)
    keys_total = await asyncio.to_thread(_count, etcd, cluster.prefix)
    alive = await asyncio.to_thread(_count, etcd, keys.machines)
    mb = reported / 1e6
    print(
        f"footprint: DB {before / 1e6:.1f} MB before compaction, {mb:.1f} MB after compaction + defrag"
        f" (data dir file {on_disk / 1e6:.1f} MB; {keys_total} keys)",
        flush=True,
    )
    return [
        Figure(
            "footprint",
            f"etcd DB size after compaction + defrag, {units:,} units on {machines:,} machines",
            f"<= {TARGET_MB:.0f} MB",
            f"{mb:.1f} MB",
            mb <= TARGET_MB and done and published and alive == machines,
            f"{keys_total:,} keys; {before / 1e6:.0f} MB before compaction;"
            f" {alive:,} machines alive at the end",
        ),
        Figure(
            "footprint",
            f"{units:,} units on {machines:,} machines (each agent + engine candidate): submitted -> active"
            " -> published (listed)",
            f"<= {TARGET_S:.0f} s for {wanted:,}",
            f"{settled:.0f} s",
            settled <= TARGET_S and units == wanted and published,
            f"submit {submitted:.0f} s, all active {active:.0f} s"
            + (f"; stopped at {units:,} of {wanted:,} units (time budget)" if units < wanted else ""),
        ),
    ]


def step(quick: bool) -> After:
    units, budget = (5_000, 60.0) if quick else (100_000, 240.0)

    async def after(cluster: SimCluster, etcd: EtcdServer) -> list[Figure]:
        return await measure(cluster, etcd, units, budget)

    return after


async def _run(machines: int, quick: bool) -> list[Figure]:
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        async with SimCluster(etcd.endpoint, ttl=AGENT_TTL, clients=4 if quick else 16) as cluster:
            await cluster.add_machines(machines)
            return await step(quick)(cluster, etcd)


def run(quick: bool) -> list[Figure]:
    return asyncio.run(_run(250 if quick else 5000, quick))
