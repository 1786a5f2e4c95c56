"""Pods (issue 21): the example application pod and booted pod of deploy/examples run on ``role=pods``
machines, registered with machined, their output in ``fleetctl journal`` and their processes in
``fleetctl status``; ``destroy`` removes them from machined, and a pod whose machine's fleetd dies moves.

The session cluster has roles web, web, db; for these tests the two web machines are given ``role=pods``
(``systemctl reload`` of fleetd with new metadata) and their own metadata back afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devcluster.nspawn import CHECKOUT, Machine
from tests.integration.e2e.harness import FleetCluster, eventually
from tests.integration.e2e.waits import active_units, list_units, wait_for_active

EXAMPLES = CHECKOUT / "deploy" / "examples"
APP = "app-pod@1.service"
BOOT = "boot-pod@1.service"


def _set_metadata(fleet: FleetCluster, machine: Machine, metadata: str) -> None:
    fleet.set_config(machine, "metadata", metadata)
    eventually(
        fleet.listed_machines,
        lambda rows: any(row[0] == machine.machine_id and row[-1] == metadata for row in rows),
        30, f"{machine.name} listed with {metadata}",
    )


@pytest.fixture
def pods_machines(fleet: FleetCluster) -> Iterator[tuple[Machine, ...]]:
    chosen = tuple(m for m in fleet.machines if "role=web" in fleet.metadata[m.name])
    assert len(chosen) == 2
    try:
        for machine in chosen:
            _set_metadata(fleet, machine, f"hostname={machine.name},role=pods")
        yield chosen
    finally:
        fleet.fleetctl("destroy", APP, BOOT)
        for machine in chosen:
            if not fleet.fleetd_active(machine):
                fleet.restore_fleetd(machine)
            _set_metadata(fleet, machine, _sorted(fleet.metadata[machine.name]))


def _sorted(metadata: str) -> str:
    """Metadata as list-machines prints it: keys in order."""
    return ",".join(sorted(metadata.split(",")))


def _machines(machine: Machine) -> list[str]:
    """Names in ``machinectl list`` inside ``machine``."""
    out = machine.run(["machinectl", "list", "--no-legend"]).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _start_pods(fleet: FleetCluster) -> dict[str, list[str]]:
    code, out, err = fleet.fleetctl("start", APP, BOOT, cwd=EXAMPLES, timeout=180)
    assert code == 0, out + err
    return wait_for_active(fleet, 2, timeout=90)


def test_pods_run_registered_logged_and_destroyed(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    placed = _start_pods(fleet)
    hosts = {fleet.by_id(placed[APP][0]).name, fleet.by_id(placed[BOOT][0]).name}
    assert hosts <= {m.name for m in pods_machines}
    app_host, boot_host = fleet.by_id(placed[APP][0]), fleet.by_id(placed[BOOT][0])
    assert "app-1" in _machines(app_host)
    assert "boot-1" in _machines(boot_host)
    # the booted pod has its own machine ID
    pod_id = boot_host.run(["machinectl", "show", "boot-1", "-p", "Id", "--value"]).stdout.strip()
    assert len(pod_id) == 32 and pod_id != boot_host.machine_id

    journal = eventually(
        lambda: fleet.fleetctl("journal", "--lines", "20", APP),
        lambda result: result[0] == 0 and "app-1: hello from the application pod" in result[1],
        30, "the application pod's lines in fleetctl journal",
    )
    assert "systemd-nspawn" in journal[1]
    code, status, err = fleet.fleetctl("status", APP)
    assert code == 0, status + err
    assert "active (running)" in status
    assert "/machine.slice/app-pod@1.service" in status
    assert "sd-stubinit" in status and "hello from the application pod" in status
    code, status, err = fleet.fleetctl("status", BOOT)
    assert code == 0, status + err
    assert "init.scope" in status and "systemd-journald" in status

    fleet.ok("destroy", APP, BOOT)
    eventually(lambda: list_units(fleet), lambda rows: rows == [], 60, "no pod units left")
    eventually(lambda: _machines(app_host) + _machines(boot_host), lambda names: names == [], 60,
               "the pods gone from machinectl list")


def test_pod_moves_when_its_machines_fleetd_dies(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    code, out, err = fleet.fleetctl("start", APP, cwd=EXAMPLES, timeout=180)
    assert code == 0, out + err
    (first_id,) = wait_for_active(fleet, 1, timeout=90)[APP]
    first = fleet.by_id(first_id)
    (other,) = (m for m in pods_machines if m is not first)
    fleet.kill_fleetd(first)
    moved = eventually(
        lambda: active_units(list_units(fleet)).get(APP, []),
        lambda hosts: hosts == [other.machine_id], 60, f"{APP} active on {other.name}",
    )
    assert moved == [other.machine_id]
    assert "app-1" in _machines(other)
