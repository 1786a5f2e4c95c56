"""spec §8.2 metadata_test.go: templates whose MachineMetadata uses %i, and role metadata."""

from __future__ import annotations

from tests.integration.e2e.harness import FleetCluster
from tests.integration.e2e.waits import wait_for_active, wait_for_unit_files


def test_templates_with_specifiers_in_metadata(fleet: FleetCluster) -> None:
    fleet.ok("submit", "metadata@.service")
    names = {m.machine_id: f"metadata@{m.name}.service" for m in fleet.machines}
    for machine in reversed(fleet.machines):
        out = fleet.ok("start", names[machine.machine_id])
        assert f"on {machine.machine_id[:8]}.../{machine.address}" in out
    placed = wait_for_active(fleet, 3)
    assert placed == {name: [machine_id] for machine_id, name in names.items()}
    code, _, err = fleet.fleetctl("start", "--block-attempts=3", "metadata@invalid.service")
    assert code == 1
    assert "metadata@invalid.service" in err
    assert "metadata@invalid.service" in wait_for_unit_files(fleet, 5)
    assert "metadata@invalid.service" not in wait_for_active(fleet, 3)


def test_role_metadata_places_units_on_matching_machines(fleet: FleetCluster) -> None:
    web = {m.machine_id for m in fleet.machines if "role=web" in fleet.metadata[m.name]}
    assert len(web) == 2
    fleet.ok("start", "web.service")
    (host,) = wait_for_active(fleet, 1)["web.service"]
    assert host in web
