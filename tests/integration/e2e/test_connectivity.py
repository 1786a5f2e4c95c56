"""spec §8.2 connectivity-loss_test.go on 3 machines: etcd frozen or stopped for longer than agent_ttl.
Units keep running (systemd never logs ``Stopping`` for them) and the cluster converges once etcd is back."""

from __future__ import annotations

import time

from tests.integration.e2e.harness import AGENT_TTL, FleetCluster
from tests.integration.e2e.waits import list_unit_files, wait_for_active, wait_for_machines

OUTAGE = AGENT_TTL + 3.0
UNITS = ["hello.service", "global.service"]


def _start_units(fleet: FleetCluster) -> tuple[dict[str, list[str]], dict[str, str]]:
    fleet.ok("start", *UNITS)
    fleet.ok("load", "goodbye.service")
    placed = wait_for_active(fleet, 4, inactive=1)
    files = list_unit_files(fleet)
    assert files is not None
    since = {m.name: m.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip() for m in fleet.machines}
    return placed, since


def _units_kept_running(fleet: FleetCluster, placed: dict[str, list[str]]) -> None:
    for unit, machines in placed.items():
        for machine_id in machines:
            assert fleet.systemd_active(fleet.by_id(machine_id), unit) == "active", (unit, machine_id)


def _nothing_stopped(fleet: FleetCluster, since: dict[str, str]) -> None:
    for machine in fleet.machines:
        journal = fleet.journal(machine, "--since", since[machine.name])
        stopping = [line for line in journal.splitlines() if line.startswith("Stopping") and (
            "hello" in line or "global" in line or "Goodbye" in line or "goodbye" in line)]
        assert not stopping, (machine.name, stopping)


def test_etcd_stopped_longer_than_the_ttl(fleet: FleetCluster) -> None:
    placed, since = _start_units(fleet)
    fleet.etcd.stop()
    try:
        time.sleep(OUTAGE)  # the outage itself: nothing to poll for
        _units_kept_running(fleet, placed)
    finally:
        fleet.etcd.start()
    wait_for_machines(fleet, 3)
    assert wait_for_active(fleet, 4, inactive=1) == placed
    _nothing_stopped(fleet, since)


def test_etcd_frozen_longer_than_the_ttl(fleet: FleetCluster) -> None:
    placed, since = _start_units(fleet)
    fleet.etcd.pause()
    try:
        time.sleep(OUTAGE)
        _units_kept_running(fleet, placed)
        _nothing_stopped(fleet, since)
    finally:
        fleet.etcd.resume()
    wait_for_machines(fleet, 3)
    after = wait_for_active(fleet, 4, inactive=1)
    assert sorted(after) == sorted(placed)
    assert sorted(after["global.service"]) == sorted(m.machine_id for m in fleet.machines)
