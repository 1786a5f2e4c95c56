"""Properties of the agent planner (Hypothesis): tasks converge, come in order, Global units land."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.agent.plan import (
    CurrentUnit,
    DesiredUnit,
    Facts,
    Task,
    TaskKind,
    desired_units,
    plan_pass,
    plan_tasks,
)
from fleetd.model import TargetState, UnitName
from tests.unit.builders import machine, unit

NAMES = [UnitName(f"u{i}.service") for i in range(6)]
HASHES = ["1" * 40, "2" * 40]

desired_maps = st.dictionaries(
    st.sampled_from(NAMES), st.tuples(st.sampled_from(HASHES), st.sampled_from(list(TargetState)))
).map(lambda d: {n: DesiredUnit(n, h, s) for n, (h, s) in d.items()})
current_maps = st.dictionaries(
    st.sampled_from(NAMES), st.tuples(st.sampled_from(HASHES), st.sampled_from(list(TargetState)))
).map(lambda d: {n: CurrentUnit(n, h, s) for n, (h, s) in d.items()})


def execute(
    tasks: tuple[Task, ...], desired: dict[UnitName, DesiredUnit], current: dict[UnitName, CurrentUnit]
) -> dict[UnitName, CurrentUnit]:
    """What the agent shell does to its units for each task (systemd left out)."""
    after = dict(current)
    for task in tasks:
        if task.unit is None:
            continue
        if task.kind is TaskKind.UNLOAD:
            del after[task.unit]
        elif task.kind is TaskKind.LOAD:
            after[task.unit] = CurrentUnit(task.unit, desired[task.unit].hash, TargetState.LOADED)
        else:
            state = TargetState.LAUNCHED if task.kind is TaskKind.START else TargetState.LOADED
            after[task.unit] = CurrentUnit(task.unit, after[task.unit].hash, state)
    return after


@settings(max_examples=300, deadline=None)
@given(desired_maps, current_maps)
def test_executing_the_tasks_then_replanning_gives_no_tasks(
    desired: dict[UnitName, DesiredUnit], current: dict[UnitName, CurrentUnit]
) -> None:
    after = execute(plan_tasks(desired, current), desired, current)
    assert plan_tasks(desired, after) == ()
    wanted = {n: (d.hash, d.state) for n, d in desired.items() if d.state is not TargetState.INACTIVE}
    assert {n: (c.hash, c.state) for n, c in after.items()} == wanted


@settings(max_examples=300, deadline=None)
@given(desired_maps, current_maps)
def test_tasks_come_in_kind_order_with_one_reload_when_something_loads(
    desired: dict[UnitName, DesiredUnit], current: dict[UnitName, CurrentUnit]
) -> None:
    tasks = plan_tasks(desired, current)
    kinds = [task.kind for task in tasks]
    assert kinds == sorted(kinds)
    loads = any(kind in (TaskKind.UNLOAD, TaskKind.LOAD) for kind in kinds)
    assert kinds.count(TaskKind.RELOAD) == (1 if loads else 0)
    assert all((task.unit is None) == (task.kind is TaskKind.RELOAD) for task in tasks)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["role", "disk"]), st.sampled_from(["web", "db", "ssd"])),
    st.lists(
        st.tuples(
            st.sampled_from(NAMES), st.sampled_from(["web", "db", None]), st.sampled_from(list(TargetState))
        ),
        unique_by=lambda t: t[0],
    ),
)
def test_global_units_without_conflicts_land_on_every_matching_machine(
    labels: dict[str, str], globals_: list[tuple[UnitName, str | None, TargetState]]
) -> None:
    host = machine("m1", **labels)
    units = {
        name: unit(name, state, is_global=True, metadata={"role": [role]} if role else None)
        for name, role, state in globals_
    }
    desired = desired_units(host, {}, units)
    expected = {
        name
        for name, role, state in globals_
        if state is not TargetState.INACTIVE and (role is None or labels.get("role") == role)
    }
    assert set(desired) == expected


flagged = st.tuples(st.sampled_from(HASHES), st.sampled_from(list(TargetState)), st.booleans())
fenced_desired = st.dictionaries(st.sampled_from(NAMES), flagged).map(
    lambda d: {n: DesiredUnit(n, h, s, c) for n, (h, s, c) in d.items()}
)
fenced_current = st.dictionaries(st.sampled_from(NAMES), flagged).map(
    lambda d: {n: CurrentUnit(n, h, s, c) for n, (h, s, c) in d.items()}
)


@settings(max_examples=300, deadline=None)
@given(fenced_desired, fenced_current, st.booleans(), st.sets(st.sampled_from(NAMES)))
def test_under_a_lost_lease_no_conflicts_unit_runs_and_nothing_is_unloaded(
    desired: dict[UnitName, DesiredUnit],
    current: dict[UnitName, CurrentUnit],
    expired: bool,
    fenced: set[UnitName],
) -> None:
    facts = Facts(10.0, lease_deadline=5.0, lease_expired=expired, reachable=False, fenced=frozenset(fenced))
    plan = plan_pass(desired, current, facts)
    after = execute(plan.tasks, desired, current)
    for name, present in after.items():
        source = desired.get(name, current.get(name))
        if present.state is TargetState.LAUNCHED and source is not None and source.conflicts:
            raise AssertionError(f"{name} has Conflicts and still runs: {plan}")
    assert not [task for task in plan.tasks if task.kind is TaskKind.UNLOAD and task.unit not in desired]
    again = plan_pass(desired, after, dataclasses.replace(facts, fenced=plan.fenced))
    assert not [task for task in again.tasks if task.kind in (TaskKind.STOP, TaskKind.START)]

