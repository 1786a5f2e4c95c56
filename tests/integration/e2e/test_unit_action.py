"""spec §8.2 unit_action_test.go: submit/load/start/stop/unload/destroy, --replace, restart, cat, ordering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.e2e.harness import FIXTURES, FleetCluster, eventually
from tests.integration.e2e.waits import (
    active_units,
    list_unit_files,
    list_units,
    wait_for_active,
    wait_for_unit_files,
    wait_for_units,
)


def _instances(count: int) -> list[str]:
    return [f"hello@{n}.service" for n in range(1, count + 1)]


def test_unit_runnable(fleet: FleetCluster) -> None:
    out = fleet.ok("start", "hello.service")
    assert "Unit hello.service launched on " in out
    assert list(wait_for_active(fleet, 1)) == ["hello.service"]


def test_submit_nine_instances_from_local_template_then_destroy_twice(fleet: FleetCluster) -> None:
    names = _instances(9)
    for _ in range(2):
        fleet.ok("submit", *names)
        files = wait_for_unit_files(fleet, 9)
        assert sorted(files) == sorted(names)
        assert all(dstate == "inactive" for dstate, _ in files.values())
        out = fleet.ok("destroy", *names)
        assert sorted(out.split("\n")[:-1]) == sorted(f"Destroyed {n}" for n in names)
        wait_for_unit_files(fleet, 0)


def test_load_six_instances_then_unload_twice(fleet: FleetCluster) -> None:
    names = _instances(6)
    for _ in range(2):
        out = fleet.ok("load", *names)
        assert out.count(" loaded on ") == 6
        rows = wait_for_units(fleet, 6)
        assert {r.unit for r in rows} == set(names)
        assert all(r.active == "inactive" and r.machine != "-" for r in rows)
        code, _, err = fleet.fleetctl("unload", *names)
        assert code == 0, err
        assert "Successfully unloaded units" in err
        wait_for_units(fleet, 0)
        files = list_unit_files(fleet)
        assert files is not None and {f: d for f, (d, _) in files.items()} == dict.fromkeys(names, "inactive")


def test_start_three_instances_then_stop_twice(fleet: FleetCluster) -> None:
    names = _instances(3)
    for _ in range(2):
        out = fleet.ok("start", *names)
        assert out.count(" launched on ") == 3
        assert sorted(wait_for_active(fleet, 3)) == names
        code, _, err = fleet.fleetctl("stop", *names)
        assert code == 0, err
        assert "Successfully stopped units" in err
        rows = eventually(
            lambda: list_units(fleet),
            lambda r: r is not None and len(r) == 3 and not active_units(r),
            30, "3 stopped units",
        )
        assert rows is not None and {r.unit for r in rows} == set(names)


def _modified_template(tmp_path: Path) -> Path:
    text = (FIXTURES / "hello@.service").read_text()
    assert "sleep 1" in text
    (tmp_path / "hello@.service").write_text(text.replace("sleep 1", "sleep 2"))
    return tmp_path


@pytest.mark.parametrize("command", ["submit", "load", "start"])
def test_replace_changes_the_stored_body(fleet: FleetCluster, tmp_path: Path, command: str) -> None:
    names = _instances(3)
    fleet.ok(command, *names)
    before = {name: fleet.ok("cat", name) for name in names}
    assert all("sleep 1" in body for body in before.values())
    modified = _modified_template(tmp_path)
    out = fleet.ok(command, "--replace", *(str(modified / name) for name in names))
    for name in names:
        after = fleet.ok("cat", name)
        assert after != before[name]
        assert "sleep 2" in after
    if command == "start":
        assert out.count(" launched on ") == 3
        assert sorted(wait_for_active(fleet, 3)) == names
    # the same content again: nothing to do
    out = fleet.ok(command, "--replace", str(modified / names[0]))
    assert f"Found same Unit({names[0]}) in Registry, nothing to do" in out


def _invocation(fleet: FleetCluster, machine_id: str, unit: str) -> str:
    machine = fleet.by_id(machine_id)
    return machine.run(["systemctl", "show", "-p", "InvocationID", "--value", unit]).stdout.strip()


def test_restart_stops_then_starts(fleet: FleetCluster) -> None:
    names = _instances(3)
    fleet.ok("start", *names)
    placed = wait_for_active(fleet, 3)
    before = {name: _invocation(fleet, placed[name][0], name) for name in names}
    assert all(before.values())
    out = fleet.ok("restart", *names)
    assert out.count(" launched") >= 3
    assert wait_for_active(fleet, 3) == placed
    for name in names:
        after = _invocation(fleet, placed[name][0], name)
        assert after and after != before[name], f"{name} was not restarted"
    code, _, err = fleet.fleetctl("stop", *names)
    assert code == 0, err
    eventually(lambda: list_units(fleet), lambda r: r is not None and not active_units(r), 30, "0 active")


def test_cat_prints_the_unit_file(fleet: FleetCluster) -> None:
    fleet.ok("submit", "hello.service")
    assert fleet.ok("cat", "hello.service").strip() == (FIXTURES / "hello.service").read_text().strip()
    code, _, err = fleet.fleetctl("cat", "nosuch.service")
    assert code == 1
    assert "Unit nosuch.service not found" in err


def test_status_of_a_loaded_unit(fleet: FleetCluster) -> None:
    fleet.ok("load", "hello.service")
    code, out, err = fleet.fleetctl("status", "hello.service")
    assert "Loaded: loaded" in out, (code, out, err)


def test_list_unit_files_is_sorted(fleet: FleetCluster, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "hello@.service", tmp_path)
    names = [f"hello@{n:02d}.service" for n in range(1, 21)]
    for name in reversed(names):
        fleet.ok("submit", str(tmp_path / name))
    out = fleet.ok("list-unit-files", "--no-legend", "--fields", "unit")
    assert out.split() == names


def test_start_with_a_glob_starts_every_submitted_instance(fleet: FleetCluster) -> None:
    names = _instances(3)
    fleet.ok("submit", *names, "hello.service")
    out = fleet.ok("start", "hello@*")
    assert out.count(" launched on ") == 3
    assert sorted(wait_for_active(fleet, 3)) == names
    files = list_unit_files(fleet)
    assert files is not None and files["hello.service"][0] == "inactive"
