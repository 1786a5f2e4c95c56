"""Reschedule=on-failure in the planner: a failed unit moves, bounded by attempts and backoff, saying why."""

from __future__ import annotations

import dataclasses

import pytest

from fleetd.engine.plan import (
    RESCHEDULE_BACKOFF,
    RESCHEDULE_EXHAUSTED,
    RESCHEDULE_MOVED,
    RESCHEDULE_NOWHERE,
    SCHEDULE_PLACED,
    Action,
    Schedule,
    Unschedule,
    plan_cluster,
)
from fleetd.model import MachineID, Rescheduled, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot
from tests.unit.builders import apply, capped, machine, snapshot, unit

M1, M2, M3 = machine("m1"), machine("m2"), machine("m3")
NOW = 1000.0
MOVED, BACKOFF = RESCHEDULE_MOVED.format, RESCHEDULE_BACKOFF.format


def policy(u: Unit, attempts: int = 3, backoff: float = 10.0) -> Unit:
    req = dataclasses.replace(
        u.requirements, reschedule=True, reschedule_attempts=attempts, reschedule_backoff=backoff
    )
    return dataclasses.replace(u, requirements=req)


def failing(
    snap: ClusterSnapshot, failed: dict[str, tuple[str, ...]], records: dict[str, Rescheduled] | None = None
) -> ClusterSnapshot:
    return dataclasses.replace(
        snap,
        failed={UnitName(n): frozenset(MachineID(m) for m in ms) for n, ms in failed.items()},
        rescheduled={UnitName(n): r for n, r in (records or {}).items()},
        now=NOW,
    )


def moved(u: Unit, src: str, dst: str, attempt: int, limit: int = 3) -> list[Action]:
    reason = RESCHEDULE_MOVED.format(machine=src, attempt=attempt, limit=limit)
    return [
        Unschedule(u.name, MachineID(src), reason),
        Schedule(u.name, MachineID(dst), u.hash, u.target_state, SCHEDULE_PLACED),
    ]


def record(u: Unit, attempts: int, last: float, machines: tuple[str, ...], reason: str) -> Rescheduled:
    return Rescheduled(u.hash, attempts, last, tuple(MachineID(m) for m in machines), reason)


web = policy(unit("web.service"))
plain = unit("plain.service")
quick = policy(unit("quick.service"), attempts=2, backoff=0)
other = unit("other.service", body="x")
web_new = dataclasses.replace(web, hash="f" * 40)

CASES: list[tuple[str, ClusterSnapshot, list[Action], dict[str, Rescheduled | None], float | None]] = [
    (
        "without the policy a failed unit stays where it failed (fleet's default)",
        failing(snapshot([M1, M2], [plain], {"plain.service": "m1"}), {"plain.service": ("m1",)}),
        [], {}, None,
    ),
    (
        "a failed unit with the policy moves to the least-loaded other machine; attempt 1 recorded",
        failing(snapshot([M1, M2, M3], [web], {"web.service": "m1"}), {"web.service": ("m1",)}),
        moved(web, "m1", "m2", 1),
        {"web.service": record(web, 1, NOW, ("m1",), MOVED(machine="m1", attempt=1, limit=3))},
        None,
    ),
    (
        "a failure on another machine than the scheduled one does not move it",
        failing(snapshot([M1, M2], [web], {"web.service": "m2"}), {"web.service": ("m1",)}),
        [], {}, None,
    ),
    (
        "within the backoff it stays; the plan asks to be made again when the backoff ends",
        failing(
            snapshot([M1, M2, M3], [web], {"web.service": "m2"}), {"web.service": ("m2",)},
            {"web.service": record(web, 1, NOW - 4, ("m1",), "x")},
        ),
        [],
        {"web.service": record(web, 1, NOW - 4, ("m1", "m2"), BACKOFF(machine="m2", backoff=10))},
        NOW + 6,
    ),
    (
        "after the backoff it moves again, never to a machine it failed on",
        failing(
            snapshot([M1, M2, M3], [web], {"web.service": "m2"}), {"web.service": ("m2",)},
            {"web.service": record(web, 1, NOW - 20, ("m1",), "x")},
        ),
        moved(web, "m2", "m3", 2),
        {"web.service": record(web, 2, NOW, ("m1", "m2"), MOVED(machine="m2", attempt=2, limit=3))},
        None,
    ),
    (
        "attempts used up: left failed, saying so",
        failing(
            snapshot([M1, M2, M3], [quick], {"quick.service": "m3"}), {"quick.service": ("m3",)},
            {"quick.service": record(quick, 2, NOW - 20, ("m1", "m2"), "x")},
        ),
        [],
        {"quick.service": record(quick, 2, NOW - 20, ("m1", "m2", "m3"),
                                 RESCHEDULE_EXHAUSTED.format(machine="m3", limit=2))},
        None,
    ),
    (
        "no other machine can run it: left failed where it is, saying so",
        failing(snapshot([M1], [web], {"web.service": "m1"}), {"web.service": ("m1",)}),
        [],
        {"web.service": record(web, 0, 0.0, ("m1",), RESCHEDULE_NOWHERE.format(machine="m1"))},
        None,
    ),
    (
        "the only other machine is at its cap: left failed",
        failing(
            snapshot([M1, capped("m2", 1)], [web, other], {"web.service": "m1", "other.service": "m2"}),
            {"web.service": ("m1",)},
        ),
        [],
        {"web.service": record(web, 0, 0.0, ("m1",), RESCHEDULE_NOWHERE.format(machine="m1"))},
        None,
    ),
    (
        "a record for an older body is replaced: a new body starts counting anew",
        failing(
            snapshot([M1, M2], [web_new], {"web.service": "m1"}), {"web.service": ("m1",)},
            {"web.service": Rescheduled("a" * 40, 3, NOW, (MachineID("m2"),), "x")},
        ),
        moved(web_new, "m1", "m2", 1),
        {"web.service": record(web_new, 1, NOW, ("m1",), MOVED(machine="m1", attempt=1, limit=3))},
        None,
    ),
    (
        "the record of a destroyed unit is deleted",
        failing(snapshot([M1], [], {}), {}, {"web.service": record(web, 1, NOW, ("m1",), "x")}),
        [], {"web.service": None}, None,
    ),
    (
        "an unchanged record is not written again",
        failing(
            snapshot([M1], [web], {"web.service": "m1"}), {"web.service": ("m1",)},
            {"web.service": record(web, 0, 0.0, ("m1",), RESCHEDULE_NOWHERE.format(machine="m1"))},
        ),
        [], {}, None,
    ),
]


@pytest.mark.parametrize(("snap", "actions", "records", "retry_at"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_reschedule(
    snap: ClusterSnapshot,
    actions: list[Action],
    records: dict[str, Rescheduled | None],
    retry_at: float | None,
) -> None:
    plan = plan_cluster(snap)
    assert list(plan.actions) == actions
    assert dict(plan.rescheduled) == records
    assert plan.retry_at == retry_at
    # applied (the old machine's agent then unloads it and its failure record goes): nothing more to do
    after = apply(snap, plan)
    written = {n: r for n, r in {**snap.rescheduled, **plan.rescheduled}.items() if r is not None}
    still_failed = {n: ms for n, ms in after.failed.items() if after.schedule.get(n) is None
                    or after.schedule[n].machine_id in ms}
    again = plan_cluster(dataclasses.replace(after, rescheduled=written, failed=still_failed))
    assert again.actions == ()
    assert dict(again.rescheduled) == {}


def test_a_moved_unit_failing_everywhere_stops_after_its_attempts() -> None:
    """Failing on every machine it lands on: it moves attempts times, then stays failed."""
    snap = failing(snapshot([M1, M2, M3, machine("m4")], [quick], {"quick.service": "m1"}), {})
    moves = 0
    for step in range(10):
        where = snap.schedule[quick.name].machine_id
        snap = dataclasses.replace(snap, failed={quick.name: frozenset({where})}, now=NOW + 100 * step)
        plan = plan_cluster(snap)
        moves += sum(isinstance(a, Unschedule) for a in plan.actions)
        records = {n: r for n, r in {**snap.rescheduled, **plan.rescheduled}.items() if r is not None}
        snap = dataclasses.replace(apply(snap, plan), rescheduled=records)
    assert moves == 2
    assert snap.rescheduled[quick.name].reason == RESCHEDULE_EXHAUSTED.format(machine="m3", limit=2)
