"""spec §8.2 client_test.go (TestFleetctlWithEnv) and fleetctl_test.go (version and help outputs)."""

from __future__ import annotations

from fleetd.model import VERSION
from tests.integration.e2e.harness import FleetCluster


def test_list_machines_with_the_endpoint_from_the_environment(fleet: FleetCluster) -> None:
    code, out, err = fleet.fleetctl(
        "list-machines", "--full", "--no-legend", endpoint=False,
        env={"FLEETCTL_ENDPOINT": fleet.etcd.endpoint},
    )
    assert code == 0, err
    rows = sorted(line.split() for line in out.splitlines())
    expected = sorted(
        [m.machine_id, m.address, ",".join(sorted(fleet.metadata[m.name].split(",")))] for m in fleet.machines
    )
    assert rows == expected


def test_list_machines_table(fleet: FleetCluster) -> None:
    lines = fleet.ok("list-machines").splitlines()
    assert lines[0].split() == ["MACHINE", "IP", "METADATA"]
    shown = sorted(line.split()[0] for line in lines[1:])
    assert shown == sorted(m.machine_id[:8] + "..." for m in fleet.machines)


def test_version_prints_exactly_the_version(fleet: FleetCluster) -> None:
    code, out, _ = fleet.fleetctl("version", endpoint=False)
    assert (code, out) == (0, f"fleetctl version {VERSION}\n")


def test_help_shows_the_version(fleet: FleetCluster) -> None:
    code, out, _ = fleet.fleetctl("help", endpoint=False)
    assert code == 0
    assert VERSION in out


def test_help_flags_and_no_arguments_print_the_same_help(fleet: FleetCluster) -> None:
    outputs = [fleet.fleetctl(*args, endpoint=False)[:2] for args in (("--help",), ("-h",), ("help",), ())]
    assert outputs[0][1].strip()
    assert all(output == outputs[0] for output in outputs)
    assert outputs[0][0] == 0
