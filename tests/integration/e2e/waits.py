"""Reading the cluster through fleetctl's tables and waiting on them with deadlines (fleet's WaitForNUnits,
WaitForNActiveUnits, WaitForNMachines): every probe is a real ``fleetctl list-*`` run, polled every 0.25 s."""

from __future__ import annotations

from dataclasses import dataclass

from tests.integration.e2e.harness import FleetCluster, eventually

__all__ = [
    "UnitRow",
    "active_units",
    "list_unit_files",
    "list_units",
    "wait_for_active",
    "wait_for_machines",
    "wait_for_unit_files",
    "wait_for_units",
]

WAIT = 30.0


@dataclass(frozen=True, slots=True)
class UnitRow:
    unit: str
    active: str
    machine: str  # the full machine ID, or "-"


def list_units(fleet: FleetCluster) -> list[UnitRow] | None:
    """``list-units --no-legend --full --fields unit,active,machine`` (machine cut at ``/``); None when
    fleetctl fails."""
    code, out, _ = fleet.fleetctl("list-units", "--no-legend", "--full", "--fields", "unit,active,machine")
    if code != 0:
        return None
    rows = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3:
            rows.append(UnitRow(fields[0], fields[1], fields[2].split("/")[0]))
    return rows


def active_units(rows: list[UnitRow] | None) -> dict[str, list[str]]:
    """unit -> machines where it is active."""
    found: dict[str, list[str]] = {}
    for row in rows or ():
        if row.active == "active":
            found.setdefault(row.unit, []).append(row.machine)
    return found


def list_unit_files(fleet: FleetCluster) -> dict[str, tuple[str, str]] | None:
    """unit -> (dstate, state) from ``list-unit-files --no-legend --full --fields unit,dstate,state``."""
    code, out, _ = fleet.fleetctl("list-unit-files", "--no-legend", "--full", "--fields", "unit,dstate,state")
    if code != 0:
        return None
    files = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3:
            files[fields[0]] = (fields[1], fields[2])
    return files


def wait_for_units(fleet: FleetCluster, count: int, timeout: float = WAIT) -> list[UnitRow]:
    """Until list-units shows exactly ``count`` rows."""
    rows = eventually(
        lambda: list_units(fleet), lambda r: r is not None and len(r) == count, timeout, f"{count} unit rows"
    )
    assert rows is not None
    return rows


def wait_for_active(
    fleet: FleetCluster, count: int, timeout: float = WAIT, *, inactive: int = 0
) -> dict[str, list[str]]:
    """Until exactly ``count`` (unit, machine) rows are active and ``inactive`` rows are inactive (loaded,
    not started), none in another state; returns unit -> machines where active."""

    def settled(rows: list[UnitRow] | None) -> bool:
        if rows is None:
            return False
        states = [r.active for r in rows]
        return states.count("active") == count and states.count("inactive") == inactive == len(rows) - count

    return active_units(eventually(lambda: list_units(fleet), settled, timeout, f"{count} active units"))


def wait_for_unit_files(fleet: FleetCluster, count: int, timeout: float = WAIT) -> dict[str, tuple[str, str]]:
    files = eventually(
        lambda: list_unit_files(fleet), lambda f: f is not None and len(f) == count, timeout,
        f"{count} unit files",
    )
    assert files is not None
    return files


def wait_for_machines(fleet: FleetCluster, count: int, timeout: float = WAIT) -> list[str]:
    """Until list-machines shows ``count`` machines; returns their full IDs."""
    rows = eventually(fleet.listed_machines, lambda r: len(r) == count, timeout, f"{count} machines")
    return [row[0] for row in rows]
