"""Properties of the engine planner over random clusters (Hypothesis)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from random import Random
from typing import TypeVar
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.agent.plan import desired_units
from fleetd.engine import plan as plan_module
from fleetd.engine.placement import LocalView, can_run, replaced_units
from fleetd.engine.plan import plan_cluster, stays_when_drained
from fleetd.glob import match
from fleetd.model import MachineID, MachineState, TargetState, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit
from tests.unit.builders import apply, digest, machine, unit

MACHINE_IDS = ["m0", "m1", "m2", "m3", "m4"]
NAMES = [
    "a.service",
    "b.service",
    "c.service",
    "db.service",
    "web@1.service",
    "web@2.service",
    "web@3.service",
]
PATTERNS = ["web@*", "a.service", "*.service", "b.*", "db.service", "c.service"]
STATES = list(TargetState)


@st.composite
def machines(draw: st.DrawFn) -> list[MachineState]:
    ids = draw(st.lists(st.sampled_from(MACHINE_IDS), unique=True, max_size=4))
    out = []
    for machine_id in ids:
        labels = draw(
            st.dictionaries(st.sampled_from(["role", "disk"]), st.sampled_from(["web", "db", "ssd"]))
        )
        cap = draw(st.sampled_from([0, 0, 1, 2, 3]))
        out.append(dataclasses.replace(machine(machine_id, **labels), max_units=cap))
    return out


@st.composite
def units(draw: st.DrawFn) -> list[Unit]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=7))
    out = []
    for name in names:
        optional = st.lists(st.sampled_from(PATTERNS), max_size=2)
        metadata = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries({"role": st.sets(st.sampled_from(["web", "db"]), min_size=1)}),
            )
        )
        out.append(
            unit(
                name,
                draw(st.sampled_from(STATES)),
                body=draw(st.sampled_from(["", "v2"])),
                machine_id=draw(st.one_of(st.none(), st.sampled_from(MACHINE_IDS))),
                peers=draw(st.lists(st.sampled_from(NAMES), max_size=1)),
                conflicts=draw(optional),
                metadata=metadata,
                is_global=draw(st.booleans().map(lambda b: b and draw(st.booleans()))),
                replaces=draw(st.lists(st.sampled_from([*NAMES, "web@*"]), max_size=1)),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn) -> ClusterSnapshot:
    live = draw(machines())
    known = draw(units())
    schedule: dict[UnitName, ScheduledUnit] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        machine_id = MachineID(draw(st.sampled_from(MACHINE_IDS)))
        content_hash = draw(st.sampled_from([digest(name), digest(name + "v2")]))
        state = draw(st.sampled_from([TargetState.LOADED, TargetState.LAUNCHED]))
        schedule[UnitName(name)] = ScheduledUnit(machine_id, content_hash, state)
    cordoned = frozenset(map(MachineID, draw(st.sets(st.sampled_from(MACHINE_IDS), max_size=2))))
    by_name = {u.name: u for u in known}
    return ClusterSnapshot(3, {m.id: m for m in live}, by_name, schedule, cordoned=cordoned)


K = TypeVar("K")
V = TypeVar("V")


def _shuffled(snap: ClusterSnapshot, rng: Random) -> ClusterSnapshot:
    """The same snapshot with every mapping iterated in another order."""

    def shuffle(mapping: Mapping[K, V]) -> dict[K, V]:
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    return ClusterSnapshot(
        snap.revision,
        shuffle(snap.machines),
        shuffle(snap.units),
        shuffle(snap.schedule),
        snap.extra_schedule,
        cordoned=snap.cordoned,
    )


def _local_units(snap: ClusterSnapshot) -> dict[MachineID, dict[UnitName, Unit]]:
    """Per machine: its scheduled units plus the Global units its agent would run."""
    scheduled: dict[MachineID, dict[UnitName, Unit]] = {m: {} for m in snap.machines}
    for name, entry in snap.schedule.items():
        scheduled[entry.machine_id][name] = snap.units[name]
    globals_ = {n: u for n, u in snap.units.items() if u.is_global}
    out = {}
    for machine_id, local in scheduled.items():
        desired = desired_units(snap.machines[machine_id], local, globals_)
        out[machine_id] = {name: snap.units[name] for name in desired}
    return out


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_applying_a_plan_then_replanning_gives_an_empty_plan(snap: ClusterSnapshot) -> None:
    plan = plan_cluster(snap)
    keys = [(action.unit, action.machine_id) for action in plan.actions]
    assert len(keys) == len(set(keys)), "one key written twice (etcd refuses that in one Txn)"
    after = apply(snap, plan)
    assert plan_cluster(after).actions == ()


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.randoms(use_true_random=False))
def test_the_plan_is_independent_of_input_order(snap: ClusterSnapshot, rng: Random) -> None:
    assert plan_cluster(_shuffled(snap, rng)) == plan_cluster(snap)


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_placed_units_meet_their_constraints(snap: ClusterSnapshot) -> None:
    after = apply(snap, plan_cluster(snap))
    assert after.extra_schedule == ()
    local = _local_units(after)
    for name, entry in after.schedule.items():
        placed = after.units[name]
        host = after.machines[entry.machine_id]
        req = placed.requirements
        assert not placed.is_global and placed.target_state is not TargetState.INACTIVE
        assert (entry.hash, entry.state) == (placed.hash, placed.target_state)
        assert req.machine_id is None or req.machine_id in (host.id, host.id[:8])
        assert all(host.metadata.get(key) in values for key, values in req.metadata.items())
        here = local[entry.machine_id]
        assert all(peer in here for peer in req.peers if peer != name)
        for other in here.values():
            if other.name == name:
                continue
            conflict = any(match(p, other.name) for p in req.conflicts) or any(
                match(p, name) for p in other.requirements.conflicts
            )
            assert not conflict, f"{name} shares {entry.machine_id} with conflicting {other.name}"
            replaced = (
                any(match(p, name) for p in other.requirements.replaces)
                and not any(match(p, other.name) for p in req.replaces)
                and name not in other.requirements.peers
                and not other.is_global
            )
            assert not replaced, f"{name} shares {entry.machine_id} with its replacement {other.name}"


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_every_unit_some_machine_can_run_is_placed(snap: ClusterSnapshot) -> None:
    after = apply(snap, plan_cluster(snap))
    local = _local_units(after)
    for name, candidate in after.units.items():
        if candidate.is_global or candidate.target_state is TargetState.INACTIVE or name in after.schedule:
            continue
        for machine_id, here in local.items():
            cap = after.machines[machine_id].max_units
            if machine_id in after.cordoned or (cap and len(here) >= cap):
                continue  # a cordoned or full machine takes nothing new
            view = LocalView(after.machines[machine_id], here)
            runnable = can_run(view, candidate).ok and all(
                not other.is_global for other in replaced_units(view, candidate)
            )
            assert not runnable, f"{name} left unplaced though {machine_id} can run it"


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_cordoned_machines_get_nothing_new_and_keep_only_units_that_stay(snap: ClusterSnapshot) -> None:
    after = apply(snap, plan_cluster(snap))
    for name, entry in after.schedule.items():
        if entry.machine_id in snap.cordoned:
            before = snap.schedule.get(name)
            assert before is not None and before.machine_id == entry.machine_id, f"{name} placed on a cordon"
            assert stays_when_drained(after.units[name]), f"{name} left on a cordoned machine"


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_no_placement_takes_a_machine_over_its_cap(snap: ClusterSnapshot) -> None:
    """A machine that got a new unit has at most its cap of scheduled units (those over a lowered cap stay,
    but then nothing new goes there)."""
    after = apply(snap, plan_cluster(snap))
    for machine_id, host in after.machines.items():
        here = {name for name, entry in after.schedule.items() if entry.machine_id == machine_id}
        new = {name for name in here if (e := snap.schedule.get(name)) is None or e.machine_id != machine_id}
        if host.max_units and new:
            assert len(here) <= host.max_units, f"{machine_id} over its cap {host.max_units}: {sorted(here)}"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=12))
def test_capacity_allowing_every_unit_is_placed_and_loads_are_balanced(
    machine_count: int, unit_count: int
) -> None:
    fleet = [machine(f"m{i}") for i in range(machine_count)]
    plain = [unit(f"u{i}.service") for i in range(unit_count)]
    snap = ClusterSnapshot(1, {m.id: m for m in fleet}, {u.name: u for u in plain}, {})
    after = apply(snap, plan_cluster(snap))
    assert set(after.schedule) == {u.name for u in plain}
    loads = [sum(1 for e in after.schedule.values() if e.machine_id == m.id) for m in fleet]
    assert max(loads) - min(loads) <= 1


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_the_unblocked_shortcut_gives_the_plan_of_the_plain_walk(snap: ClusterSnapshot) -> None:
    """With a shortcut built at the first skipped machine, plans equal those of walking and skipping."""
    with mock.patch.object(plan_module, "_LONG_WALK", 10**9):
        walked = plan_cluster(snap)
    with mock.patch.object(plan_module, "_LONG_WALK", 1):
        shortcut = plan_cluster(snap)
    assert shortcut == walked
