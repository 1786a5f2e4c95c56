"""Agent pass planner tables: holding unloads, confirming the lease, the owed reload and fencing.

Each case: desired and current units, what the shell knows (Facts) -> the AgentPlan, reasons included.
The clock reads 100; a lease deadline of 90 has passed, 110 has not.
"""

from __future__ import annotations

import math

import pytest

from fleetd.agent.plan import (
    FENCED,
    LAUNCHED_BUT_LOADED,
    LOADED_BUT_LAUNCHED,
    LOADED_NOT_SCHEDULED,
    RELOAD_OWED,
    SCHEDULED_NOT_LOADED,
    AgentPlan,
    CurrentUnit,
    DesiredUnit,
    Facts,
    FencePolicy,
    plan_pass,
)
from fleetd.model import TargetState, UnitName
from tests.unit.agent.test_plan import H1, LOAD, RELOAD, RELOAD_TASK, START, STOP, UNLOAD, task
from tests.unit.builders import INACTIVE, LAUNCHED, LOADED

NOW = 100.0
A, B = UnitName("a.service"), UnitName("b.service")


def want(name: str, state: TargetState = LAUNCHED, *, conflicts: bool = True) -> DesiredUnit:
    return DesiredUnit(UnitName(name), H1, state, conflicts)


def have(name: str, state: TargetState = LAUNCHED, *, conflicts: bool = True) -> CurrentUnit:
    return CurrentUnit(UnitName(name), H1, state, conflicts)


def facts(**changes: object) -> Facts:
    values: dict[str, object] = {"now": NOW, "lease_deadline": 110.0, "lease_confirmed": True}
    values.update(changes)
    return Facts(**values)  # type: ignore[arg-type]


LOST = {"lease_deadline": 90.0, "reachable": False}

CASES: list[tuple[str, list[DesiredUnit], list[CurrentUnit], Facts, AgentPlan]] = [
    ("healthy and in sync: nothing", [want("a.service")], [have("a.service")], facts(), AgentPlan(())),
    (
        "no keep-alive for a TTL: a Conflicts unit is fenced (stopped, kept loaded)",
        [want("a.service")],
        [have("a.service")],
        facts(**LOST),
        AgentPlan((task(STOP, "a.service", FENCED),), frozenset({A})),
    ),
    (
        "etcd answered the keep-alive 'expired' and no new lease yet: fenced",
        [want("a.service")],
        [have("a.service")],
        facts(lease_expired=True),
        AgentPlan((task(STOP, "a.service", FENCED),), frozenset({A})),
    ),
    (
        "lease lost: a unit without Conflicts keeps running",
        [want("a.service", conflicts=False)],
        [have("a.service", conflicts=False)],
        facts(**LOST),
        AgentPlan(()),
    ),
    (
        "lease lost, fence_units=all: every running unit is fenced",
        [want("a.service", conflicts=False)],
        [have("a.service", conflicts=False)],
        facts(**LOST, fence=FencePolicy.ALL),
        AgentPlan((task(STOP, "a.service", FENCED),), frozenset({A})),
    ),
    (
        "lease lost, fence_units=none: a Conflicts unit keeps running",
        [want("a.service")],
        [have("a.service")],
        facts(**LOST, fence=FencePolicy.NONE),
        AgentPlan(()),
    ),
    (
        "lease lost, the unit left the schedule: fenced by its loaded flag, the unload held",
        [],
        [have("a.service")],
        facts(**LOST),
        AgentPlan((task(STOP, "a.service", FENCED),), frozenset({A}), held=frozenset({A})),
    ),
    (
        "lease lost, a loaded Conflicts unit: fenced without a stop",
        [want("a.service")],
        [have("a.service", LOADED)],
        facts(**LOST),
        AgentPlan((), frozenset({A})),
    ),
    (
        "lease lost, a Conflicts unit not loaded yet: loaded but not started",
        [want("a.service")],
        [],
        facts(**LOST),
        AgentPlan((task(LOAD, "a.service", SCHEDULED_NOT_LOADED), RELOAD_TASK)),
    ),
    (
        "already fenced, lease still lost: nothing more",
        [want("a.service")],
        [have("a.service", LOADED)],
        facts(**LOST, fenced=frozenset({A})),
        AgentPlan((), frozenset({A})),
    ),
    (
        "fenced, registered again, schedule settling: stays stopped until it settles",
        [want("a.service")],
        [have("a.service", LOADED)],
        facts(fenced=frozenset({A}), settle_until=105.0),
        AgentPlan((), frozenset({A}), wake_at=105.0),
    ),
    (
        "fenced, settled, still scheduled here: started again, fence released",
        [want("a.service")],
        [have("a.service", LOADED)],
        facts(fenced=frozenset({A}), settle_until=95.0),
        AgentPlan((task(START, "a.service", LOADED_BUT_LAUNCHED),)),
    ),
    (
        "fenced, settled, placed elsewhere: unloaded, fence released",
        [],
        [have("a.service", LOADED)],
        facts(fenced=frozenset({A}), settle_until=95.0),
        AgentPlan((task(UNLOAD, "a.service", LOADED_NOT_SCHEDULED), RELOAD_TASK)),
    ),
    (
        "fenced and unloaded meanwhile: forgotten",
        [],
        [],
        facts(fenced=frozenset({A})),
        AgentPlan(()),
    ),
    (
        "etcd unreachable, lease not lapsed yet: nothing now, a pass at the lease deadline",
        [want("a.service")],
        [have("a.service")],
        facts(reachable=False),
        AgentPlan((), wake_at=110.0),
    ),
    (
        "etcd unreachable, no covered unit running: no timed pass",
        [want("a.service", conflicts=False)],
        [have("a.service", conflicts=False)],
        facts(reachable=False),
        AgentPlan(()),
    ),
    (
        "schedule settling: the unload of a unit that left is held, a pass when it settles",
        [want("b.service", LOADED)],
        [have("a.service"), have("b.service")],
        facts(settle_until=105.0),
        AgentPlan((task(STOP, "b.service", LAUNCHED_BUT_LOADED),), held=frozenset({A}), wake_at=105.0),
    ),
    (
        "a unit left the schedule, lease not confirmed this pass: confirm first",
        [],
        [have("a.service")],
        facts(lease_confirmed=False),
        AgentPlan((), confirm_lease=True),
    ),
    (
        "a unit left the schedule, lease confirmed: unload, reload",
        [want("b.service", INACTIVE)],
        [have("a.service")],
        facts(),
        AgentPlan((task(UNLOAD, "a.service", LOADED_NOT_SCHEDULED), RELOAD_TASK)),
    ),
    (
        "a reload is owed: reload alone",
        [want("a.service")],
        [have("a.service")],
        facts(reload_owed=True),
        AgentPlan((task(RELOAD, None, RELOAD_OWED),)),
    ),
    (
        "a reload is owed and a load runs: one reload",
        [want("a.service"), want("b.service")],
        [have("a.service")],
        facts(reload_owed=True),
        AgentPlan(
            (
                task(LOAD, "b.service", SCHEDULED_NOT_LOADED),
                RELOAD_TASK,
                task(START, "b.service", LOADED_BUT_LAUNCHED),
            )
        ),
    ),
    (
        "a unit whose body is unusable is left as it is",
        [],
        [have("a.service")],
        facts(lease_confirmed=False, skipped=frozenset({A})),
        AgentPlan(()),
    ),
]


@pytest.mark.parametrize(
    ("desired", "current", "known", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_pass(
    desired: list[DesiredUnit], current: list[CurrentUnit], known: Facts, expected: AgentPlan
) -> None:
    plan = plan_pass({d.name: d for d in reversed(desired)}, {c.name: c for c in current}, known)
    assert plan == expected


def test_a_fence_lasts_from_the_lease_deadline_until_the_schedule_settles() -> None:
    """Walk one unit through a partition: running, fenced at the deadline, held while settling, back."""
    desired = {A: want("a.service")}
    current = {A: have("a.service")}
    before = plan_pass(desired, current, facts(lease_deadline=100.5, reachable=False))
    assert before == AgentPlan((), wake_at=100.5)
    fenced = plan_pass(desired, current, facts(lease_deadline=100.0, reachable=False))
    assert fenced.tasks == (task(STOP, "a.service", FENCED),)
    current = {A: have("a.service", LOADED)}
    settling = plan_pass(desired, current, facts(fenced=fenced.fenced, settle_until=NOW + 5))
    assert settling.tasks == () and settling.fenced == fenced.fenced
    later = facts(now=NOW + 5, lease_deadline=NOW + 10, fenced=settling.fenced)
    released = plan_pass(desired, current, later)
    assert released == AgentPlan((task(START, "a.service", LOADED_BUT_LAUNCHED),))


def test_no_fence_and_no_timed_pass_when_the_lease_has_no_deadline() -> None:
    plan = plan_pass({A: want("a.service")}, {A: have("a.service")}, Facts(now=NOW, reachable=False))
    assert plan == AgentPlan(()) and plan.wake_at == math.inf
