"""The dashboard's pure core: registry keys -> shown records -> the diffs a browser gets."""

from __future__ import annotations

import json

import pytest

from fleetd.api.dashboard_state import Broadcast, ClusterView
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import Keyspace, UnitRecord, Unplaceable

K = Keyspace()
H1 = "1" * 40
H2 = "2" * 40
M1 = MachineID("a" * 32)
M2 = MachineID("b" * 32)


def unit(name: str, unit_hash: str = H1, is_global: bool = False) -> tuple[str, str]:
    record = UnitRecord(UnitName(name), unit_hash, is_global, TargetState.INACTIVE)
    return K.unit(name), ks.encode_unit(record)


def target(name: str, state: TargetState) -> tuple[str, str]:
    return K.target(name), state.value


def machine(machine_id: MachineID, ip: str = "10.0.0.1", **metadata: str) -> tuple[str, str]:
    return K.machine(machine_id), ks.encode_machine(MachineState(machine_id, ip, metadata))


def scheduled(name: str, machine_id: MachineID, state: TargetState = TargetState.LAUNCHED) -> tuple[str, str]:
    return K.scheduled(machine_id, name), ks.encode_schedule(H1, state)


def state(name: str, machine_id: MachineID, active: str = "active", sub: str = "running") -> tuple[str, str]:
    value = UnitState(UnitName(name), machine_id, "loaded", active, sub, H1, TargetState.LAUNCHED)
    return K.unit_state(name, machine_id), ks.encode_unit_state(value)


def view_of(*items: tuple[str, str]) -> ClusterView:
    view = ClusterView()
    view.apply_all(items)
    return view


def test_a_running_unit_shows_its_states_machine_and_systemd_state() -> None:
    view = view_of(
        machine(M1), unit("hello.service"), target("hello.service", TargetState.LAUNCHED),
        scheduled("hello.service", M1), state("hello.service", M1),
    )
    assert view.unit_json(UnitName("hello.service")) == {
        "name": "hello.service", "desired": "launched", "global": False, "current": "launched",
        "machine": M1, "load": "loaded", "active": "active", "sub": "running",
    }
    assert view.machine_json(M1) == {"id": M1, "ip": "10.0.0.1", "metadata": {}, "units": 1}


def test_an_unplaceable_unit_shows_the_reason_for_its_current_hash_only() -> None:
    why = Unplaceable(H1, "no machine has role=db")
    reason = (K.unplaceable_unit("db.service"), ks.encode_unplaceable(why))
    view = view_of(unit("db.service"), target("db.service", TargetState.LAUNCHED), reason)
    shown = view.unit_json(UnitName("db.service"))
    assert shown is not None
    assert shown["reason"] == "no machine has role=db"
    assert shown["machine"] is None and shown["current"] == "inactive"
    view.apply(*unit("db.service", H2))  # replaced since the engine judged it: the old reason is not shown
    shown = view.unit_json(UnitName("db.service"))
    assert shown is not None and "reason" not in shown


def test_a_global_unit_counts_machines_and_active_ones() -> None:
    view = view_of(
        unit("mon.service", is_global=True), state("mon.service", M1),
        state("mon.service", M2, active="failed", sub="failed"),
    )
    assert view.unit_json(UnitName("mon.service")) == {
        "name": "mon.service", "desired": "inactive", "global": True, "machines": 2, "activeOn": 1,
    }


def test_machine_unit_count_follows_schedule_and_states_without_counting_twice() -> None:
    view = view_of(machine(M1), machine(M2))
    view.apply(*scheduled("a.service", M1))
    view.apply(*state("a.service", M1))
    view.apply(*state("b.service", M1))
    view.apply(*state("a.service", M2))  # the old machine still reports it while it moves
    assert view.machine_json(M1)["units"] == 2  # type: ignore[index]
    assert view.machine_json(M2)["units"] == 1  # type: ignore[index]
    view.apply(K.unit_state("a.service", M2), None)
    view.apply(K.scheduled(M1, "a.service"), None)
    assert view.machine_json(M1)["units"] == 2  # type: ignore[index]  # its state is still there
    assert view.machine_json(M2)["units"] == 0  # type: ignore[index]


def test_the_diffs_name_only_what_changed() -> None:
    view = view_of(machine(M1), unit("hello.service"))
    broadcast = Broadcast(view)
    assert broadcast.changes(view.apply(*unit("hello.service"))) == []  # rewritten unchanged: nothing
    changes = broadcast.changes(view.apply(*target("hello.service", TargetState.LAUNCHED)))
    assert [c["op"] for c in changes] == ["unit"]
    assert changes[0]["unit"]["desired"] == "launched"
    touched = view.apply_all([scheduled("hello.service", M1), state("hello.service", M1)])
    changes = broadcast.changes(touched)
    assert [(c["op"], c.get("machine", {}).get("units")) for c in changes] == [("machine", 1), ("unit", None)]
    assert changes[1]["unit"]["active"] == "active"
    changes = broadcast.changes(view.apply(K.unit("hello.service"), None))
    assert changes == [{"op": "unit-removed", "name": "hello.service"}]
    assert broadcast.changes(view.apply(K.leader, M1)) == [{"op": "leader", "id": M1}]
    assert broadcast.changes(view.apply(K.machine(M1), None)) == [{"op": "machine-removed", "id": M1}]


def test_a_unit_diff_is_small() -> None:
    view = view_of(unit("hello@1.service"), scheduled("hello@1.service", M1))
    broadcast = Broadcast(view)
    changes = broadcast.changes(view.apply(*state("hello@1.service", M1)))
    assert len(json.dumps(changes, separators=(",", ":"))) < 250


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (K.unit("bad.service"), "{not json"),
        (K.unit("bad.service"), '{"hash": 5}'),
        (K.target("bad.service"), "running-ish"),
        (K.machines + "not/an/id", "{}"),
        (K.machine(M1), '{"id": "' + M2 + '"}'),  # names another machine
        (K.unit_state("bad.service", M1), "[]"),
        (K.scheduled(M1, "bad.service"), '{"hash": "x", "state": "launched"}'),
        (K.units + "no-suffix", "{}"),
        (K.unplaceable_unit("bad.service"), "\udcff"),
        (K.prefix + "something/else", "x"),
    ],
)
def test_hostile_values_show_as_absent_and_never_raise(key: str, value: str) -> None:
    view = view_of(machine(M2))
    view.apply(key, value)
    snapshot = view.snapshot_json()
    assert snapshot["units"] == [] or snapshot["units"][0]["name"] == "bad.service"
    assert [m["id"] for m in snapshot["machines"]] == [M2]
    json.dumps(snapshot)


def test_the_snapshot_is_sorted_and_carries_cordons_and_the_leader() -> None:
    view = view_of(
        machine(M2, role="db"), machine(M1), unit("b.service"), unit("a.service"),
        (K.cordon(M2), ks.encode_cordon(ks.Cordon("maintenance"))), (K.leader, M2),
    )
    view.revision = 7
    snapshot = view.snapshot_json()
    assert [u["name"] for u in snapshot["units"]] == ["a.service", "b.service"]
    assert [m["id"] for m in snapshot["machines"]] == [M1, M2]
    assert snapshot["machines"][1]["cordoned"] is True
    assert snapshot["machines"][1]["metadata"] == {"role": "db"}
    assert snapshot["leader"] == M2 and snapshot["revision"] == 7


def test_the_unit_page_lists_the_state_on_each_machine() -> None:
    view = view_of(unit("a.service"), scheduled("a.service", M2), state("a.service", M1, "deactivating"))
    assert view.unit_states_json("a.service") == [
        {"machine": M1, "scheduled": None, "load": "loaded", "active": "deactivating", "sub": "running",
         "state": "launched", "hash": H1},
        {"machine": M2, "scheduled": "launched"},
    ]
