"""No herd, measured by etcd itself: the watch events one unit start costs, and the watches each fleetd
holds, do not grow with the number of machines.

Each simulated machine is what fleetd runs by default: the production agent *and* an engine candidate
(bench.cluster_sim with one engine per machine). etcd's own counters are read from its ``/metrics``:
``etcd_debugging_mvcc_events_total`` (watch events sent) and ``etcd_debugging_mvcc_watcher_total``.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from functools import partial

import pytest

from bench.cluster_sim import SimCluster, unit, wait_until
from devcluster.etcd import EtcdServer
from fleetd.engine.engine import mirrored_prefixes
from fleetd.model import UnitName
from fleetd.registry.keyspace import Keyspace

STARTS = 5  # unit starts measured at each size
SIZES = (4, 24)  # machines (each an agent and an engine candidate)
WATCHES_PER_STANDBY = 3  # agent: its schedule/ and globals/; engine: the leader key


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as etcd:  # its own counters: no other test's traffic
        yield etcd


def metric(etcd: EtcdServer, name: str) -> float:
    with urllib.request.urlopen(f"{etcd.endpoint}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"etcd does not export {name}"
    return float(found.group(1))


async def measure(etcd: EtcdServer, machines: int) -> tuple[float, float]:
    """(watch events per unit start, watchers per machine) for a cluster of ``machines`` fleetds."""
    prefix = f"/herd-{machines}/"
    async with SimCluster(etcd.endpoint, ttl=10.0, clients=4, engines=machines, prefix=prefix,
                          engine_interval=0.2) as cluster:
        await cluster.add_machines(machines)
        leader = cluster.leader()
        assert leader is not None

        async def settled() -> None:
            """The leader has seen everything: three ticks in a row found nothing new to plan."""
            assert leader is not None
            skipped = leader.skipped
            async with asyncio.timeout(30):
                while leader.skipped < skipped + 3:  # noqa: ASYNC110 - a counter, no event to wait on
                    await asyncio.sleep(0.05)

        await settled()
        watchers = metric(etcd, "etcd_debugging_mvcc_watcher_total")
        before = metric(etcd, "etcd_debugging_mvcc_events_total")
        for index in range(STARTS):
            name = UnitName(f"herd-{index}.service")
            await cluster.registry.put_units([unit(name)])
            assert await wait_until(partial(cluster.active.__contains__, name), cluster.changed, 30), name
        await settled()
        events = metric(etcd, "etcd_debugging_mvcc_events_total") - before
    return events / STARTS, watchers / machines


def test_watch_events_per_start_and_watchers_per_machine_do_not_grow_with_the_cluster(
    own_etcd: EtcdServer, aio: asyncio.Runner
) -> None:
    (small_events, small_watchers), (large_events, large_watchers) = (
        aio.run(measure(own_etcd, size)) for size in SIZES
    )
    report = (
        f"{SIZES[0]} machines: {small_events:.1f} events/start, {small_watchers:.2f} watchers/machine; "
        f"{SIZES[1]} machines: {large_events:.1f} events/start, {large_watchers:.2f} watchers/machine"
    )
    assert large_events <= small_events + 1, report  # +1: a stray lease-expiry or election event
    assert large_events <= 8, report
    # every machine holds its standby watches; the leader's mirror adds one watch per mirrored prefix
    mirror = len(mirrored_prefixes(Keyspace()))
    assert round(large_watchers * SIZES[1]) <= WATCHES_PER_STANDBY * SIZES[1] + mirror, report


def test_a_standby_keeps_no_lease_alive_and_a_new_leader_costs_few_leases(
    own_etcd: EtcdServer, aio: asyncio.Runner
) -> None:
    """Each machine's agent holds its lease and the leader its own; a standby candidate holds none (with
    one each, 5,000 standbys kept 1,500 leases alive a second). When the leader resigns, the standbys do
    not all take a lease to campaign with: the first to look (after a random pause) wins, the rest read.
    Leases alive: granted less revoked, as etcd counts them."""
    machines = 24

    def leases() -> tuple[float, float]:
        return (metric(own_etcd, "etcd_debugging_lease_granted_total"),
                metric(own_etcd, "etcd_debugging_lease_revoked_total"))

    async def scenario() -> tuple[tuple[float, float], tuple[float, float]]:
        async with SimCluster(own_etcd.endpoint, ttl=10.0, clients=4, engines=machines, prefix="/leases/",
                              engine_interval=0.2) as cluster:
            await cluster.add_machines(machines)
            first = cluster.leader()
            assert first is not None
            key = cluster.registry.keys.leader
            held = await cluster.kvs[0].get(key)
            assert held is not None
            settled = leases()
            await first.election.resign()  # it campaigns again too: any candidate may win the next term
            async with asyncio.timeout(30):
                while True:  # a new term: the key created again (polled: the test's client has no watch)
                    now = await cluster.kvs[0].get(key)
                    if now is not None and now.create_revision != held.create_revision:
                        break
                    await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # every standby's pause (at most 0.25 s) is over
            return settled, leases()

    (granted, revoked), (granted_after, _) = aio.run(scenario())
    assert granted - revoked == machines + 1, f"{granted:.0f} leases granted, {revoked:.0f} revoked"
    # without the pause every standby took one (24 of 24); with it a few do, more on a loaded machine
    assert granted_after - granted < machines, f"{granted_after - granted:.0f} leases for a new leader"
