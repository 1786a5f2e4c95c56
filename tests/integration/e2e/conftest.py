"""Fixtures of the end-to-end suite (spec §8.2 replayed with the real fleetctl on a real cluster).

- ``fleet``: etcd + 3 nspawn machines running fleetd, metadata ``role=web`` on two, ``role=db`` on one,
  ``hostname=<machine name>`` on all, ``agent_ttl`` 5 s; one cluster for the session (``fleet_clusters``),
  stopped by PID at the end, also on failure.
- after each test that uses it, every machine is running with fleetd active and listed, and every unit is
  destroyed, gone from list-units and unloaded from every machine, so tests are independent whatever they
  broke; when that fails, the error carries the cluster's state (``FleetCluster.diagnose``) and the next
  test gets a new cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fleetd.systemd.unitdir import DEFAULT_UNITS_DIRECTORY
from tests.integration.e2e.harness import FleetCluster, boot_fleet_cluster, eventually
from tests.integration.e2e.waits import list_unit_files, list_units, wait_for_machines

CLUSTER_SIZE = 3


class Clusters:
    """The session's cluster: booted on first use, and booted anew for the next test after a clean-up that
    failed, so one broken cluster fails one test, not every test after it. A boot that fails is not retried:
    every later test gets its error at once."""

    def __init__(self, boot: Callable[[], FleetCluster]) -> None:
        self._boot = boot
        self._current: FleetCluster | None = None
        self._boot_error: BaseException | None = None
        self.broken = False

    def get(self) -> FleetCluster:
        if self._boot_error is not None:
            raise RuntimeError(f"the e2e cluster did not boot: {self._boot_error}") from self._boot_error
        if self._current is not None and self.broken:
            self.close()
        if self._current is None:
            try:
                self._current = self._boot()
            except Exception as exc:
                self._boot_error = exc
                raise
            self.broken = False
        return self._current

    def close(self) -> None:
        cluster, self._current = self._current, None
        if cluster is not None:
            cluster.destroy()


@pytest.fixture(scope="session")
def fleet_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    clusters = Clusters(lambda: boot_fleet_cluster(tmp_path_factory.mktemp("e2e"), CLUSTER_SIZE))
    try:
        yield clusters
    finally:
        clusters.close()


@pytest.fixture
def fleet(fleet_clusters: Clusters, request: pytest.FixtureRequest) -> Iterator[FleetCluster]:
    """The session's cluster, cleaned up after the test whatever it broke (a cluster that cannot be cleaned
    up is replaced for the next test; the error carries its state, ``FleetCluster.diagnose``)."""
    cluster = fleet_clusters.get()
    yield cluster
    try:
        restore(cluster)
        destroy_all_units(cluster)
    except Exception as exc:  # a wait that ran out, or a machine or etcd that would not come back
        fleet_clusters.broken = True
        report = cluster.diagnose()
        (cluster.state_dir / f"diagnosis-{request.node.name}.txt").write_text(f"{exc}\n{report}\n")
        raise AssertionError(f"cleaning up after {request.node.name}: {exc}\n{report}") from exc


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
    eventually(lambda: unit_files_left(fleet), lambda left: not left, 60, "no unit file left on a machine")


def unit_files_left(fleet: FleetCluster) -> dict[str, list[str]]:
    """Unit files still in each machine's units directory (once every unit is destroyed, a file left means
    that machine's agent cannot unload it)."""
    left = {}
    for machine in fleet.machines:
        names = machine.run(["ls", "-A", str(DEFAULT_UNITS_DIRECTORY)], timeout=20).stdout.split()
        if names:
            left[machine.name] = names
    return left
