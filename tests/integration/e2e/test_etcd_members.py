"""A 3-member etcd under a fleet of 3 nspawn machines: losing an etcd member is not an outage.

fleetd (fleet.conf ``etcd_servers``) and fleetctl (``--endpoint``) are given all three client URLs. The raft
leader (``etcdctl endpoint status``) is killed with SIGKILL (no leadership transfer): a unit started right
after runs within 5 s and no running unit stops. With that member gone for good the cluster keeps working
(machines stay listed past three agent TTLs, units start). Started again, the member rejoins: it is a
voting member again, which shows when another member is then killed and the cluster still has a quorum.
Every measurement is printed (``etcd-leader-kill ...``); docs/reliability.md quotes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devcluster.etcd import EtcdCluster
from tests.integration.e2e.harness import AGENT_TTL, FleetCluster, boot_fleet_cluster, eventually
from tests.integration.e2e.sampling import Tally, placement, sampling
from tests.integration.e2e.waits import active_units, list_units, wait_for_machines

UNITS = tuple(f"conflict.{n}.service" for n in range(3))  # Conflicts=conflict.*: one per machine
RESUMES = 5.0  # a unit started after the leader member dies runs within this many seconds


@pytest.fixture(scope="module")
def fleet3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetCluster]:
    cluster = boot_fleet_cluster(tmp_path_factory.mktemp("e2e-etcd3"), 3, etcd_members=3)
    try:
        yield cluster
    finally:
        cluster.destroy()


def _members(fleet: FleetCluster) -> EtcdCluster:
    assert isinstance(fleet.etcd, EtcdCluster)
    return fleet.etcd


def _start_and_time(fleet: FleetCluster, unit: str, since: float, timeout: float = 60.0) -> float:
    """``fleetctl start --no-block unit`` (retried while fleetctl fails), then seconds from ``since`` until
    list-units shows it active."""
    eventually(lambda: fleet.fleetctl("start", "--no-block", unit)[0], lambda code: code == 0, timeout,
               f"fleetctl start {unit}")
    eventually(lambda: active_units(list_units(fleet)), lambda a: unit in a, timeout, f"{unit} active")
    return time.monotonic() - since


def test_losing_etcd_members_stops_nothing_and_a_restarted_member_rejoins(fleet3: FleetCluster) -> None:
    etcd = _members(fleet3)
    fleet3.ok("start", *UNITS)
    before = placement(fleet3, UNITS)
    leader = eventually(etcd.leader, lambda m: m is not None, 30, "an etcd leader")
    assert leader is not None
    tally = Tally(before)
    with sampling(fleet3, tally):
        leader.kill()
        killed = time.monotonic()
        resumed = _start_and_time(fleet3, "hello.service", killed)
        # the member stays gone: three TTLs later every machine is still listed and units still start
        settle_until = time.monotonic() + 3 * AGENT_TTL
        while time.monotonic() < settle_until:
            assert len(fleet3.listed_machines()) == len(fleet3.machines)
            time.sleep(0.5)
        degraded = _start_and_time(fleet3, "goodbye.service", time.monotonic())
    after = placement(fleet3, (*UNITS, "hello.service", "goodbye.service"))
    moved = [u for u in UNITS if after[u].machine != before[u].machine]
    print(
        f"etcd-leader-kill members=3 ttl={AGENT_TTL:g}s units={len(UNITS)} new-unit-active={resumed:.1f}s"
        f" stopped={len(tally.stopped)} moved={len(moved)} doubled={len(tally.doubled)}"
        f" degraded-start={degraded:.1f}s samples={tally.samples}"
    )
    assert resumed <= RESUMES
    assert not tally.stopped and not moved and not tally.doubled

    # the member comes back from its data dir and rejoins: then it can stand in for another member
    leader.start()
    eventually(lambda: len(etcd.status()), lambda n: n == len(etcd.members), 30, "3 members answering")
    other = next(m for m in etcd.members if m is not leader)
    other.kill()
    try:
        rejoined = _start_and_time(fleet3, "say.service", time.monotonic())
        wait_for_machines(fleet3, len(fleet3.machines), timeout=30)
        print(f"etcd-member-rejoin members=3 quorum-with-rejoined-member new-unit-active={rejoined:.1f}s")
    finally:
        other.start()
    wait_for_machines(fleet3, len(fleet3.machines), timeout=60)
    fleet3.ok("destroy", *UNITS, "hello.service", "goodbye.service", "say.service")
