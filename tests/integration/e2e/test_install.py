"""spec §8.2 install_test.go (TestInstallUnit): a unit with [Install] WantedBy=hello.service follows hello."""

from __future__ import annotations

from tests.integration.e2e.harness import FleetCluster, eventually
from tests.integration.e2e.waits import list_units, wait_for_units


def _active(fleet: FleetCluster) -> dict[str, str]:
    return {row.unit: row.active for row in list_units(fleet) or ()}


def test_install_unit(fleet: FleetCluster) -> None:
    fleet.ok("load", "hello.service", "discovery.service")
    rows = wait_for_units(fleet, 2)
    assert rows[0].machine == rows[1].machine  # MachineOf=hello.service
    assert {r.unit: r.active for r in rows} == {"discovery.service": "inactive", "hello.service": "inactive"}
    fleet.ok("start", "hello.service")
    eventually(
        lambda: _active(fleet), lambda a: a.get("discovery.service") == "active", 30, "discovery active"
    )
    assert fleet.systemd_active(fleet.by_id(rows[0].machine), "discovery.service") == "active"
    fleet.fleetctl("stop", "hello.service")
    eventually(
        lambda: _active(fleet),
        lambda a: a == {"discovery.service": "inactive", "hello.service": "inactive"},
        30, "discovery inactive again",
    )
