"""``fleetctl start`` on the real cluster ends early, with why, for a unit systemd reports failed and for a
unit no machine can run (the engine's published reason), instead of waiting forever."""

from __future__ import annotations

import time

from tests.integration.e2e.harness import FleetCluster

LIMIT = 10.0  # seconds: both must fail well within this


def test_a_unit_systemd_reports_failed_fails_start_with_its_states(fleet: FleetCluster) -> None:
    began = time.monotonic()
    code, _out, err = fleet.fleetctl("start", "false.service")
    elapsed = time.monotonic() - began
    assert code == 1, err
    assert elapsed < LIMIT, f"start took {elapsed:.1f}s"
    assert "unit false.service failed to start on " in err
    assert "(systemd: loaded/failed/failed)" in err
    assert "fleetctl journal false.service" in err
    assert "Traceback" not in err


def test_a_unit_no_machine_can_run_fails_start_with_the_engines_reason(fleet: FleetCluster) -> None:
    began = time.monotonic()
    code, _out, err = fleet.fleetctl("start", "nowhere.service")
    elapsed = time.monotonic() - began
    assert code == 1, err
    assert elapsed < LIMIT, f"start took {elapsed:.1f}s"
    assert "unit nowhere.service cannot be placed: no machine has the metadata role=nonesuch" in err
    status_code, _out, status_err = fleet.fleetctl("status", "nowhere.service")
    assert status_code == 1
    assert "No machine can run it: no machine has the metadata role=nonesuch" in status_err
    listed = fleet.ok("list-unit-files", "--no-legend", "--fields", "unit,reason")
    assert "nowhere.service\tno machine has the metadata role=nonesuch" in listed
