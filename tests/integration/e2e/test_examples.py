"""Every example unit of deploy/examples passes ``fleetctl verify`` and real systemd's
``systemd-analyze verify`` (run inside a cluster machine; templates are checked through an instance)."""

from __future__ import annotations

import subprocess

import pytest

from devcluster.cluster import FLEETCTL
from devcluster.nspawn import CHECKOUT
from tests.integration.e2e.harness import FleetCluster

EXAMPLES = CHECKOUT / "deploy" / "examples"
UNITS = sorted(p.name for p in EXAMPLES.glob("*.service"))


def test_there_are_examples() -> None:
    assert len(UNITS) >= 5


@pytest.mark.parametrize("unit", UNITS)
def test_fleetctl_verify(unit: str) -> None:
    done = subprocess.run(
        [str(FLEETCTL), "verify", unit], capture_output=True, text=True, check=False, cwd=EXAMPLES
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"{unit}: ok ")


def test_systemd_analyze_verify(fleet: FleetCluster) -> None:
    machine = fleet.machines[0]
    directory = "/run/e2e-examples"
    for unit in UNITS:
        machine.put_file(f"{directory}/{unit}", (EXAMPLES / unit).read_text())
    paths = [f"{directory}/{u.replace('@.', '@example.')}" for u in UNITS]
    done = machine.run(["systemd-analyze", "verify", *paths], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "X-Fleet" not in done.stderr
