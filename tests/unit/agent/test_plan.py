"""Agent planner tables: desired units for a machine, and desired vs current -> ordered tasks (spec §6.3)."""

from __future__ import annotations

import pytest

from fleetd.agent.plan import (
    ALWAYS_RELOAD,
    HASH_DIFFERS,
    LAUNCHED_BUT_LOADED,
    LOADED_BUT_LAUNCHED,
    LOADED_NOT_SCHEDULED,
    SCHEDULED_NOT_LOADED,
    CurrentUnit,
    DesiredUnit,
    Task,
    TaskKind,
    desired_units,
    plan_tasks,
)
from fleetd.model import TargetState, Unit, UnitName
from tests.unit.builders import INACTIVE, LAUNCHED, LOADED, machine, unit

UNLOAD, LOAD, RELOAD, STOP, START = (
    TaskKind.UNLOAD,
    TaskKind.LOAD,
    TaskKind.RELOAD,
    TaskKind.STOP,
    TaskKind.START,
)
H1, H2 = "1" * 40, "2" * 40


def want(name: str, state: TargetState = LAUNCHED, content_hash: str = H1) -> DesiredUnit:
    return DesiredUnit(UnitName(name), content_hash, state)


def have(name: str, state: TargetState = LAUNCHED, content_hash: str = H1) -> CurrentUnit:
    return CurrentUnit(UnitName(name), content_hash, state)


def task(kind: TaskKind, name: str | None, reason: str) -> Task:
    return Task(kind, UnitName(name) if name else None, reason)


RELOAD_TASK = task(RELOAD, None, ALWAYS_RELOAD)

TASKS: list[tuple[str, list[DesiredUnit], list[CurrentUnit], list[Task]]] = [
    ("nothing desired, nothing present", [], [], []),
    ("in sync", [want("a.service")], [have("a.service")], []),
    (
        "desired launched, absent: load, reload, start",
        [want("a.service")],
        [],
        [
            task(LOAD, "a.service", SCHEDULED_NOT_LOADED),
            RELOAD_TASK,
            task(START, "a.service", LOADED_BUT_LAUNCHED),
        ],
    ),
    (
        "desired loaded, absent: load, reload",
        [want("a.service", LOADED)],
        [],
        [task(LOAD, "a.service", SCHEDULED_NOT_LOADED), RELOAD_TASK],
    ),
    (
        "present, not desired: unload, reload",
        [],
        [have("a.service")],
        [task(UNLOAD, "a.service", LOADED_NOT_SCHEDULED), RELOAD_TASK],
    ),
    (
        "present, desired inactive: unload, reload",
        [want("a.service", INACTIVE)],
        [have("a.service", LOADED)],
        [task(UNLOAD, "a.service", LOADED_NOT_SCHEDULED), RELOAD_TASK],
    ),
    ("absent and desired inactive: nothing", [want("a.service", INACTIVE)], [], []),
    (
        "hash differs, launched: unload, load, reload, start",
        [want("a.service", content_hash=H2)],
        [have("a.service")],
        [
            task(UNLOAD, "a.service", HASH_DIFFERS),
            task(LOAD, "a.service", SCHEDULED_NOT_LOADED),
            RELOAD_TASK,
            task(START, "a.service", LOADED_BUT_LAUNCHED),
        ],
    ),
    (
        "hash differs, loaded: unload, load, reload (no stop)",
        [want("a.service", LOADED, H2)],
        [have("a.service", LAUNCHED)],
        [task(UNLOAD, "a.service", HASH_DIFFERS), task(LOAD, "a.service", SCHEDULED_NOT_LOADED), RELOAD_TASK],
    ),
    (
        "loaded, desired launched: start only, no reload",
        [want("a.service")],
        [have("a.service", LOADED)],
        [task(START, "a.service", LOADED_BUT_LAUNCHED)],
    ),
    (
        "launched, desired loaded: stop only, no reload",
        [want("a.service", LOADED)],
        [have("a.service", LAUNCHED)],
        [task(STOP, "a.service", LAUNCHED_BUT_LOADED)],
    ),
    (
        "left by a previous fleetd (inactive), desired launched: load, reload, start",
        [want("a.service")],
        [have("a.service", INACTIVE)],
        [
            task(LOAD, "a.service", SCHEDULED_NOT_LOADED),
            RELOAD_TASK,
            task(START, "a.service", LOADED_BUT_LAUNCHED),
        ],
    ),
    (
        "left by a previous fleetd (inactive), desired loaded: load, reload",
        [want("a.service", LOADED)],
        [have("a.service", INACTIVE)],
        [task(LOAD, "a.service", SCHEDULED_NOT_LOADED), RELOAD_TASK],
    ),
    (
        "a batch: sorted by kind, then by name; one reload",
        [want("d.service"), want("c.service", LOADED), want("b.service"), want("e.service")],
        [have("a.service"), have("c.service"), have("b.service", LOADED), have("e.service", content_hash=H2)],
        [
            task(UNLOAD, "a.service", LOADED_NOT_SCHEDULED),
            task(UNLOAD, "e.service", HASH_DIFFERS),
            task(LOAD, "d.service", SCHEDULED_NOT_LOADED),
            task(LOAD, "e.service", SCHEDULED_NOT_LOADED),
            RELOAD_TASK,
            task(STOP, "c.service", LAUNCHED_BUT_LOADED),
            task(START, "b.service", LOADED_BUT_LAUNCHED),
            task(START, "d.service", LOADED_BUT_LAUNCHED),
            task(START, "e.service", LOADED_BUT_LAUNCHED),
        ],
    ),
]


@pytest.mark.parametrize(
    ("desired", "current", "expected"), [t[1:] for t in TASKS], ids=[t[0] for t in TASKS]
)
def test_plan_tasks(desired: list[DesiredUnit], current: list[CurrentUnit], expected: list[Task]) -> None:
    tasks = plan_tasks({d.name: d for d in reversed(desired)}, {c.name: c for c in current})
    assert list(tasks) == expected


def test_task_kinds_are_ordered() -> None:
    assert sorted(TaskKind, reverse=True) == [START, STOP, RELOAD, LOAD, UNLOAD]


WEB = machine("m1", role="web")
g0 = unit("conflict-global.0.service", is_global=True, conflicts=["conflict-global.*"])
g1 = unit("conflict-global.1.service", is_global=True, conflicts=["conflict-global.*"])
web_only = unit("web-global.service", LOADED, is_global=True, metadata={"role": ["web"]})
db_only = unit("db-global.service", is_global=True, metadata={"role": ["db"]})
idle_global = unit("idle-global.service", INACTIVE, is_global=True)
hello = unit("hello.service")
avoid = unit("avoid.service", LOADED, conflicts=["web-global.service"])

DESIRED: list[tuple[str, list[Unit], list[Unit], list[str]]] = [
    ("scheduled units only", [hello], [], ["hello.service"]),
    ("inactive scheduled unit left out", [unit("x.service", INACTIVE)], [], []),
    ("Global unit with matching metadata included", [], [web_only, db_only], ["web-global.service"]),
    ("inactive Global unit left out", [], [idle_global], []),
    ("Global conflicts: the first by name wins", [], [g1, g0], ["conflict-global.0.service"]),
    ("scheduled units come before Global ones", [avoid], [web_only], ["avoid.service"]),
    (
        "scheduled plus Global",
        [hello],
        [g0, web_only],
        ["conflict-global.0.service", "hello.service", "web-global.service"],
    ),
]


@pytest.mark.parametrize(
    ("scheduled", "globals_", "expected"), [d[1:] for d in DESIRED], ids=[d[0] for d in DESIRED]
)
def test_desired_units(scheduled: list[Unit], globals_: list[Unit], expected: list[str]) -> None:
    desired = desired_units(WEB, {u.name: u for u in scheduled}, {u.name: u for u in globals_})
    assert list(desired) == expected
    by_name = {u.name: u for u in scheduled + globals_}
    for name, entry in desired.items():
        assert (entry.name, entry.hash, entry.state) == (name, by_name[name].hash, by_name[name].target_state)
