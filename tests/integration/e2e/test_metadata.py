"""spec §8.2 metadata_test.go: templates whose MachineMetadata uses %i, and role metadata; a Global unit
following live metadata (set, unset and reset with fleetctl)."""

from __future__ import annotations

from devcluster.nspawn import Machine
from tests.integration.e2e.harness import FleetCluster, eventually
from tests.integration.e2e.waits import list_units, wait_for_active, wait_for_unit_files

LIVE = 120.0  # agents read their live metadata every 10 s; generous for a loaded machine


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


def test_a_global_unit_follows_live_metadata(fleet: FleetCluster) -> None:
    web = [m for m in fleet.machines if "role=web" in fleet.metadata[m.name]]
    (db,) = [m for m in fleet.machines if m not in web]

    def runs_on(*machines: Machine) -> None:
        expected = sorted(m.machine_id for m in machines)
        eventually(lambda: list_units(fleet), lambda rows: rows is not None and sorted(
            r.machine for r in rows if r.unit == "global-db.service" and r.active == "active") == expected
            and all(r.active == "active" for r in rows), LIVE, f"global-db.service active on {expected} only")

    try:
        fleet.ok("start", "global-db.service")
        runs_on(db)
        fleet.ok("set-metadata", web[0].machine_id, "role=db")  # starts there too
        runs_on(db, web[0])
        fleet.ok("unset-metadata", db.machine_id, "role")  # and stops on the db machine
        runs_on(web[0])
        fleet.ok("reset-metadata", web[0].machine_id)  # role=web again: stops there
        fleet.ok("reset-metadata", db.machine_id, "role")  # role=db again: starts there
        runs_on(db)
        out = fleet.ok("list-machines", "--no-legend", "--full", "--fields", "machine,metadata")
        listed = dict(line.split("\t", 1) for line in out.splitlines())
        for machine in fleet.machines:  # the configured metadata again
            assert set(listed[machine.machine_id].split(",")) == set(fleet.metadata[machine.name].split(","))
    finally:
        for machine in fleet.machines:
            fleet.fleetctl("reset-metadata", machine.machine_id)
