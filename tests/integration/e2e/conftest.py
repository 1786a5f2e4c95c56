"""Fixtures of the end-to-end suite (spec §8.2 replayed with the real fleetctl on a real cluster).

- ``fleet`` (session): etcd + 3 nspawn machines running fleetd, metadata ``role=web`` on two, ``role=db`` on
  one, ``hostname=<machine name>`` on all, ``agent_ttl`` 5 s. Stopped by PID at the end, also on failure.
- an autouse guard for tests that use ``fleet``: afterwards every machine is running with fleetd active and
  listed, and every unit is destroyed and gone from list-units, so tests are independent whatever they broke;
  when that fails, the error carries the cluster's state (``FleetCluster.diagnose``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.e2e.harness import FleetCluster, boot_fleet_cluster, eventually
from tests.integration.e2e.waits import list_unit_files, list_units, wait_for_machines

CLUSTER_SIZE = 3


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetCluster]:
    cluster = boot_fleet_cluster(tmp_path_factory.mktemp("e2e"), CLUSTER_SIZE)
    try:
        yield cluster
    finally:
        cluster.destroy()


def restore(fleet: FleetCluster) -> None:
    """Bring back what a destructive test took away: etcd, powered-off machines, stopped fleetds."""
    if fleet.etcd.pid is None:
        fleet.etcd.start()
    else:
        fleet.etcd.resume()
    for machine in fleet.machines:
        if not machine.running:
            machine.boot()
        if not fleet.fleetd_active(machine):
            fleet.restore_fleetd(machine)
    wait_for_machines(fleet, len(fleet.machines), timeout=60)


def destroy_all_units(fleet: FleetCluster) -> None:
    files = eventually(lambda: list_unit_files(fleet), lambda f: f is not None, 30, "list-unit-files")
    if files:
        fleet.ok("destroy", *sorted(files))
    eventually(lambda: list_units(fleet), lambda rows: rows == [], 60, "no unit states left")


@pytest.fixture(autouse=True)
def clean_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fleet" in request.fixturenames:
        fleet: FleetCluster = request.getfixturevalue("fleet")
        try:
            restore(fleet)
            destroy_all_units(fleet)
        except AssertionError as exc:
            report = fleet.diagnose()
            (fleet.state_dir / f"diagnosis-{request.node.name}.txt").write_text(f"{exc}\n{report}\n")
            raise AssertionError(f"cleaning up after {request.node.name}: {exc}\n{report}") from exc
