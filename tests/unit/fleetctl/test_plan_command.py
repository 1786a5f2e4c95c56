"""fleetctl plan on the fake cluster: the engine's planner on a one-off snapshot, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.model import MachineState, TargetState
from fleetd.registry import keyspace as ks
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, MACHINE_B, FakeCluster

A, B = MACHINE_A.id, MACHINE_B.id
PLACED = "unit not scheduled: placed on the least-loaded machine able to run it"


@pytest.fixture
def two() -> FakeCluster:
    cluster = FakeCluster(agent=False)
    cluster.add_machines(MACHINE_A, MACHINE_B)
    return cluster


def _schedule(cluster: FakeCluster, machine: MachineState, name: str, text: str = HELLO) -> None:
    unit = cluster.submit(name, text, TargetState.LAUNCHED)
    key = cluster.registry.keys.scheduled(machine.id, name)
    cluster.run(cluster.kv.put(key, ks.encode_schedule(unit.hash, TargetState.LAUNCHED)))


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _plan(cluster: FakeCluster, *args: str) -> list[str]:
    revision = cluster.kv.revision
    result = cluster.invoke(["plan", *args])
    assert result.exit_code == 0, result.stderr
    assert cluster.kv.revision == revision  # nothing written
    return result.stdout.splitlines()


def test_plan_places_a_new_unit_on_the_least_loaded_machine(two: FakeCluster, tmp_path: Path) -> None:
    _schedule(two, MACHINE_A, "web.service")
    lines = _plan(two, _file(tmp_path, "new.service", HELLO))
    assert lines[1:] == [f"place new.service on 9f8e7d6c... ({PLACED})"]
    assert lines[0].startswith("Plan at revision ") and lines[0].endswith(": 1 change(s)")
    assert "new.service" not in {r.name for r in two.run(two.registry.list_units())}


def test_plan_says_why_a_unit_cannot_be_placed(two: FakeCluster, tmp_path: Path) -> None:
    path = _file(tmp_path, "db.service", HELLO + "\n[X-Fleet]\nMachineMetadata=role=db\n")
    assert _plan(two, path)[1:] == ["cannot place db.service: no machine has the metadata role=db"]


def test_an_existing_unit_keeps_its_text_unless_replace(two: FakeCluster, tmp_path: Path) -> None:
    _schedule(two, MACHINE_A, "web.service")
    path = _file(tmp_path, "web.service", HELLO + f"\n[X-Fleet]\nMachineID={B}\n")
    assert _plan(two, path)[1:] == ["nothing to do"]
    lines = _plan(two, "--replace", path)
    assert lines[1:] == [
        f"move web.service from 1a2b3c4d... to 9f8e7d6c... (target Machine({A}) unable to run unit:"
        f' agent ID "{A}" does not match required "{B}")'
    ]


def test_plan_shows_what_a_drain_moves(two: FakeCluster) -> None:
    _schedule(two, MACHINE_A, "web.service")
    _schedule(two, MACHINE_A, "pinned.service", HELLO + f"\n[X-Fleet]\nMachineID={A}\n")
    two.run(two.kv.put(two.registry.keys.cordon(A), ks.encode_cordon(ks.Cordon("test"))))
    assert _plan(two)[1:] == [
        f"move web.service from 1a2b3c4d... to 9f8e7d6c... (target Machine({A}) is cordoned: the unit moves"
        " to another machine)"
    ]


def test_plan_refuses_a_bad_file(two: FakeCluster, tmp_path: Path) -> None:
    result = two.invoke(["plan", _file(tmp_path, "bad.service", "[Service\n")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "bad.service" in result.stderr
