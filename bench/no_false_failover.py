"""No false failover: etcd paused (SIGSTOP) or stopped for 5 s, then back; nothing may move.

Targets (issue 10): over 10 trials, 0 units stopped or re-placed, and an engine leading again within 2 lease
TTLs of etcd's return. Trials alternate a 5 s pause and a 5 s stop + restart. The machines are simulated
agents (agent_ttl 10 s, the production etcd request timeout of 1 s) and three engines. Counted per trial,
from the outage to a settle period after the leader is back: StopUnit/unload calls on any machine's fake
systemd, schedule changes and machine-record deletions seen by a watch.

    .venv/bin/python -m bench no_false_failover [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.cluster_sim import SimCluster, unit, wait_until
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.errors import RegistryError
from fleetd.registry.kv import KV, EventType

__all__ = ["run"]

TTL = 10.0
OUTAGE = 5.0
SETTLE = 5.0


async def _count(kv: KV, prefix: str, start: int, counts: dict[str, int], deletes_only: bool) -> None:
    with contextlib.suppress(RegistryError):
        async for batch in kv.watch(prefix, start):
            counts[prefix] += sum(1 for e in batch if not deletes_only or e.type is EventType.DELETE)


def _stops(cluster: SimCluster) -> int:
    """StopUnit calls so far, on every machine (an unload always follows a stop)."""
    return sum(1 for m in cluster.machines for call in m.units.calls if call[0] == "stop")


async def _trial(cluster: SimCluster, etcd: EtcdServer, restart: bool) -> tuple[int, int, int, float]:
    """(units stopped, schedule changes, machine deletions, seconds to a leader after etcd is back)."""
    keys = cluster.registry.keys
    revision = (await cluster.kvs[0].range(keys.schema)).revision
    counts = {keys.schedules: 0, keys.machines: 0}
    watches = [
        asyncio.create_task(_count(cluster.kvs[0], keys.schedules, revision + 1, counts, False)),
        asyncio.create_task(_count(cluster.kvs[0], keys.machines, revision + 1, counts, True)),
    ]
    stops = _stops(cluster)
    if restart:
        await asyncio.to_thread(etcd.stop)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(etcd.start)
    else:
        etcd.pause()
        await asyncio.sleep(OUTAGE)
        etcd.resume()
    back = time.monotonic()
    leader_kv = None
    while time.monotonic() - back < 3 * TTL:
        with contextlib.suppress(RegistryError):
            leader_kv = await cluster.kvs[0].get(keys.leader)
        if leader_kv is not None and cluster.leader() is not None:
            break
        await asyncio.sleep(0.05)
    elected = time.monotonic() - back if leader_kv is not None and cluster.leader() else float("inf")
    await asyncio.sleep(SETTLE)
    for task in watches:
        task.cancel()
    for task in watches:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return _stops(cluster) - stops, counts[keys.schedules], counts[keys.machines], elected


async def _run(machines: int, units: int, trials: int) -> list[Figure]:
    with EtcdServer() as etcd:
        async with SimCluster(etcd.endpoint, ttl=TTL, engines=3, clients=8, request_timeout=1.0) as cluster:
            await cluster.add_machines(machines)
            await cluster.registry.put_units([unit(f"steady-{i:04}.service") for i in range(units)])
            if not await wait_until(lambda: cluster.starts >= units, cluster.changed, 120):
                raise RuntimeError("units did not start")
            await asyncio.sleep(2.0)
            results = []
            for index in range(trials):
                restart = index % 2 == 1
                got = await _trial(cluster, etcd, restart)
                results.append(got)
                print(
                    f"no_false_failover: trial {index + 1}/{trials} ({'restart' if restart else 'pause'}"
                    f" {OUTAGE:.0f}s): stops {got[0]}, schedule changes {got[1]}, machines lost {got[2]},"
                    f" leader after {got[3]:.2f}s",
                    flush=True,
                )
    stops = sum(r[0] for r in results)
    moves = sum(r[1] for r in results)
    lost = sum(r[2] for r in results)
    worst = max(r[3] for r in results)
    bad = [
        f"trial {i + 1} ({'restart' if i % 2 else 'pause'}): {r[2]} leases lost, {r[0]} stopped"
        for i, r in enumerate(results)
        if any(r[:3])
    ]
    return [
        Figure(
            "no_false_failover",
            f"etcd paused / restarted for {OUTAGE:.0f} s, {trials} trials, {machines:,} machines,"
            f" {units:,} units: units stopped or re-placed",
            "0",
            f"{stops} stopped, {moves} schedule changes",
            stops == 0 and moves == 0,
            f"{lost} machine records lost" + (f"; {'; '.join(bad)}" if bad else ""),
        ),
        Figure(
            "no_false_failover",
            "an engine leading again after etcd is back",
            f"<= {2 * TTL:.0f} s (2 lease TTLs)",
            f"worst {worst:.1f} s",
            worst <= 2 * TTL,
        ),
    ]


def run(quick: bool) -> list[Figure]:
    machines, units, trials = (100, 100, 2) if quick else (1000, 1000, 10)
    return asyncio.run(_run(machines, units, trials))


if __name__ == "__main__":
    import sys

    for f in run("--quick" in sys.argv):
        print(f.line())
