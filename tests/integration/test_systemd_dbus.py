"""The UnitManager contract on a real systemd, through DbusUnitManager.

How systemd is reached: the host has no systemd, so the suite runs *inside* an nspawn machine of the shared
cluster: ``test_contract_on_real_systemd`` starts ``pytest`` for ``TestDbusUnitManagerContract`` in the
machine (nsenter; the checkout and venv are bound there) and asserts it passed. Inside, the adapter talks to
the machine's own system bus and writes its units directory in the machine's file system, exactly as fleetd
does in production. Connecting from the host to ``/proc/<pid>/root/run/dbus/system_bus_socket`` was the other
option, but systemd resolves unit-file paths in its own root, so the adapter would need a host-to-machine path
translation used only by tests. On the host, ``TestDbusUnitManagerContract`` skips itself (no systemd).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devcluster.nspawn import CHECKOUT
from fleetd.systemd.dbus import DbusUnitManager, unit_name_of_path
from tests.contract.unit_manager_contract import ContractManager, UnitManagerContract
from tests.integration.fixtures_cluster import Cluster

INNER = "tests/integration/test_systemd_dbus.py::TestDbusUnitManagerContract"


def _booted_with_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()  # sd_booted()


class TestDbusUnitManagerContract(UnitManagerContract):
    @pytest.fixture(autouse=True)
    def _inside_a_machine(self) -> None:
        if not _booted_with_systemd():
            pytest.skip("needs systemd as PID 1: runs inside a machine via test_contract_on_real_systemd")

    @asynccontextmanager
    async def open_manager(self, units_directory: Path) -> AsyncIterator[ContractManager]:
        manager = await DbusUnitManager.connect(units_directory)
        try:
            yield manager
        finally:
            await manager.close()


def test_contract_on_real_systemd(cluster: Cluster) -> None:
    if _booted_with_systemd():
        pytest.skip("already inside a machine")
    result = cluster.machines[0].run(
        [str(CHECKOUT / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "no:hypothesispytest", INNER],  # the checkout is read-only in the machine
        cwd=str(CHECKOUT), timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= 10, output
    assert "skipped" not in output and "failed" not in output, output


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/org/freedesktop/systemd1/unit/hello_2eservice", "hello.service"),
        ("/org/freedesktop/systemd1/unit/hello_401_2eservice", "hello@1.service"),
        ("/org/freedesktop/systemd1/unit/_31st_2dunit_2eservice", "1st-unit.service"),
        ("/org/freedesktop/systemd1/job/12", None),
    ],
)
def test_unit_names_from_object_paths(path: str, name: str | None) -> None:
    assert unit_name_of_path(path) == name
