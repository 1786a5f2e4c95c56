"""spec §8.2 scheduling_test.go and cluster_test.go on 3 machines: Conflicts, MachineOf, Replaces, MachineID,
Global, and units moving when a machine's fleetd stops."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.e2e.harness import AGENT_TTL, FIXTURES, FleetCluster, eventually
from tests.integration.e2e.waits import (
    active_units,
    list_unit_files,
    list_units,
    wait_for_active,
    wait_for_machines,
    wait_for_unit_files,
)

FAILOVER = AGENT_TTL + 15.0  # stop on SIGTERM deletes the machine at once; generous for a loaded host


def _stays(fleet: FleetCluster, expected: dict[str, list[str]], seconds: float) -> None:
    """The active placement does not change for ``seconds`` (no churn after settling)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert active_units(list_units(fleet)) == expected
        time.sleep(0.25)


def test_conflicts_spread_units_and_leave_the_rest_unscheduled(fleet: FleetCluster) -> None:
    names = [f"conflict.{n}.service" for n in range(5)]
    fleet.ok("start", "--no-block", *names)
    assert sorted(wait_for_unit_files(fleet, 5)) == names
    placed = wait_for_active(fleet, 3)
    machines = [m for ms in placed.values() for m in ms]
    assert len(set(machines)) == 3
    _stays(fleet, placed, 2.0)


def test_multiple_conflicts_on_one_line_and_on_several(fleet: FleetCluster) -> None:
    names = [f"conflict.multiple.{n}.service" for n in range(3)]
    fleet.ok("start", "hello.service")  # one machine already carries a unit: least-loaded alone won't spread
    fleet.ok("start", *names)
    placed = wait_for_active(fleet, 4)
    assert len({placed[name][0] for name in names}) == 3


def test_one_way_conflict(fleet: FleetCluster, tmp_path: Path) -> None:
    fleet.ok("start", "conflicts-with-hello.service")
    (host,) = wait_for_active(fleet, 1)["conflicts-with-hello.service"]
    pinned = tmp_path / "hello.service"  # hello, but only allowed on that one machine
    pinned.write_text((FIXTURES / "hello.service").read_text() + f"\n[X-Fleet]\nMachineID={host}\n")
    fleet.ok("start", "--no-block", str(pinned))
    _stays(fleet, {"conflicts-with-hello.service": [host]}, 3.0)
    fleet.ok("destroy", "conflicts-with-hello.service")
    assert wait_for_active(fleet, 1) == {"hello.service": [host]}


def test_machine_of_pairs_stay_together_and_move_together(fleet: FleetCluster) -> None:
    pings = [f"ping.{n}.service" for n in range(3)]
    pongs = [f"pong.{n}.service" for n in range(3)]
    for machine in fleet.machines:  # ssh to every machine works
        assert fleet.ok("ssh", machine.machine_id, "echo", "reachable").strip() == "reachable"
    fleet.ok("start", *pings, *pongs)
    placed = wait_for_active(fleet, 6)
    for ping, pong in zip(pings, pongs, strict=True):
        assert placed[ping] == placed[pong]
    host = fleet.by_id(placed["ping.1.service"][0])
    fleet.stop_fleetd(host)
    try:
        moved = eventually(
            lambda: active_units(list_units(fleet)),
            lambda a: sum(map(len, a.values())) == 6 and a["ping.1.service"] != [host.machine_id],
            FAILOVER, "ping.1 to move",
        )
        assert moved["pong.1.service"] == moved["ping.1.service"]
        assert host.machine_id not in [m for ms in moved.values() for m in ms]
        assert fleet.systemd_active(host, "ping.1.service") != "active"
    finally:
        fleet.restore_fleetd(host)


def test_unit_moves_to_the_spare_machine_and_others_stay(fleet: FleetCluster) -> None:
    fleet.ok("start", "conflict.0.service", "conflict.1.service")
    placed = wait_for_active(fleet, 2)
    spare = ({m.machine_id for m in fleet.machines} - {placed[u][0] for u in placed}).pop()
    host = fleet.by_id(placed["conflict.1.service"][0])
    fleet.stop_fleetd(host)
    try:
        moved = eventually(
            lambda: active_units(list_units(fleet)),
            lambda a: a.get("conflict.1.service") == [spare], FAILOVER, "conflict.1 on the spare machine",
        )
        assert moved == {"conflict.0.service": placed["conflict.0.service"], "conflict.1.service": [spare]}
    finally:
        fleet.restore_fleetd(host)


def test_replaces_kicks_the_replaced_unit_to_another_machine(fleet: FleetCluster) -> None:
    # The original ran this on 2 machines; two pinned units keep our third machine from being the
    # least-loaded one, so replace-kick0's best machine is replace.0's (Replaces does not attract).
    third = fleet.machines[2]
    pins = [f"pin@{third.machine_id}.service", f"metadata@{third.name}.service"]
    fleet.ok("start", *pins)
    placed = wait_for_active(fleet, 2)
    assert placed == {pin: [third.machine_id] for pin in pins}
    fleet.ok("start", "replace.0.service")
    fleet.ok("start", "replace.1.service", "replace.2.service")
    placed = wait_for_active(fleet, 5)
    assert placed["replace.2.service"] == placed["replace.1.service"]
    old = placed["replace.0.service"][0]
    loads: dict[str, int] = {}
    for machines in placed.values():
        loads[machines[0]] = loads.get(machines[0], 0) + 1
    assert min(loads, key=lambda m: (loads[m], m != old)) == old, loads
    fleet.ok("start", "replace-kick0.service")
    after = eventually(
        lambda: active_units(list_units(fleet)),
        lambda a: a.get("replace-kick0.service") == [old]
        and len(a.get("replace.0.service", [])) == 1 and a["replace.0.service"] != [old]
        and sum(map(len, a.values())) == 6,
        30, "replace-kick0 on replace.0's machine and replace.0 elsewhere",
    )
    assert after["replace.1.service"] == placed["replace.1.service"]


def test_circular_replaces_settle_without_churn(fleet: FleetCluster, tmp_path: Path) -> None:
    # DESIGN: circular Replaces are ignored (the original left one of the two unscheduled).
    circular = tmp_path / "replace.0.service"
    circular.write_text(
        (FIXTURES / "replace.0.service").read_text() + "\n[X-Fleet]\nReplaces=replace-kick0.service\n"
    )
    fleet.ok("start", str(circular))
    wait_for_active(fleet, 1)
    fleet.ok("start", "replace-kick0.service")
    placed = wait_for_active(fleet, 2)
    files = list_unit_files(fleet)
    assert files is not None and sorted(files) == ["replace-kick0.service", "replace.0.service"]
    _stays(fleet, placed, 3.0)


def test_machine_id_pins_units(fleet: FleetCluster) -> None:
    names = [f"pin@{m.machine_id}.service" for m in fleet.machines]
    fleet.ok("start", *names)
    placed = wait_for_active(fleet, 3)
    for machine, name in zip(fleet.machines, names, strict=True):
        assert placed[name] == [machine.machine_id]
        assert fleet.systemd_active(machine, name) == "active"


def test_global_units_run_on_every_machine(fleet: FleetCluster) -> None:
    fleet.ok("start", "hello.service", "goodbye.service")
    wait_for_active(fleet, 2)
    out = fleet.ok("start", "global.service")
    assert "Triggered global unit global.service start" in out
    placed = wait_for_active(fleet, 5)
    assert sorted(placed["global.service"]) == sorted(m.machine_id for m in fleet.machines)
    code, _, err = fleet.fleetctl("status", "global.service")
    assert code == 1 and "global unit" in err
    code, _, err = fleet.fleetctl("restart", "global.service")
    assert "Unable to restart global unit global.service" in err
    assert sorted(wait_for_active(fleet, 5)["global.service"]) == sorted(m.machine_id for m in fleet.machines)


def test_global_conflicts(fleet: FleetCluster) -> None:
    fleet.ok("start", "conflict-global.0.service")
    assert len(wait_for_active(fleet, 3)["conflict-global.0.service"]) == 3
    fleet.ok("start", "conflict-global.1.service")
    _stays(fleet, active_units(list_units(fleet)), 3.0)
    assert list(active_units(list_units(fleet))) == ["conflict-global.0.service"]
    wait_for_machines(fleet, 3)
