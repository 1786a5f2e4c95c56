"""A Global unit's rolling update, machine by machine: the same decisions, machines as members (tables)."""

from __future__ import annotations

import dataclasses

import pytest

from fleetctl.rollout import (
    DONE,
    FAILED,
    ROLLING,
    ROLLING_BACK,
    Act,
    Observed,
    Settings,
    decide_global,
    global_steps,
    machine_members,
)
from fleetd.model import MachineID, UnitName
from fleetd.registry import records
from fleetd.registry.records import Rollout

OLD, NEW = "a" * 40, "b" * 40
MON = UnitName("mon.service")
MACHINES = tuple(MachineID(f"m{i}") for i in range(1, 5))
M1, M2, M3, M4 = MACHINES
PLAIN = Settings(step_timeout=60.0)


def rollout(phase: str = ROLLING, step: int = 1, reason: str = "", replaced: int = 0) -> Rollout:
    return Rollout(MON, NEW, "new", (MON,), {MON: OLD}, {OLD: "old"}, step, phase, reason, (),
                   MACHINES, MACHINES[:replaced])


def up(unit_hash: str = OLD, **kw: object) -> Observed:
    return dataclasses.replace(Observed(unit_hash, active=True, active_for=100.0), **kw)  # type: ignore[arg-type]


def world(**changes: Observed) -> dict[MachineID, Observed]:
    seen = dict.fromkeys(MACHINES, up())
    seen.update({MachineID(k): v for k, v in changes.items()})
    return seen


# (id, rollout, observed per machine) -> (act, machines, phase after, reason contains)
CASES = [
    ("all pinned at the old hash: unpin the first machine",
     rollout(), world(), (Act.REPLACE, (M1,), ROLLING, "")),
    ("max-unavailable 2: two machines a step",
     rollout(step=2), world(), (Act.REPLACE, (M1, M2), ROLLING, "")),
    ("an unpinned machine not active at the new hash yet: wait for it",
     rollout(replaced=1), world(m1=Observed(NEW)), (Act.WAIT, (M1,), ROLLING, "")),
    ("a machine where the unit is down goes first, beside max-unavailable running ones",
     rollout(), world(m3=Observed(OLD)), (Act.REPLACE, (M3, M1), ROLLING, "")),
    ("an unpinned machine healthy: the next machine",
     rollout(replaced=1), world(m1=up(NEW)), (Act.REPLACE, (M2,), ROLLING, "")),
    ("a machine that left the cluster is skipped",
     rollout(replaced=3), world(m1=up(NEW), m2=up(NEW), m3=up(NEW), m4=Observed("")),
     (Act.FINISH, (), DONE, "")),
    ("every machine at the new hash and healthy: done",
     rollout(replaced=4), dict.fromkeys(MACHINES, up(NEW)), (Act.FINISH, (), DONE, "")),
    ("failed at the new hash on a machine: pin the replaced machines back, the failed one first",
     rollout(replaced=2), world(m1=up(NEW), m2=Observed(NEW, failed=True)),
     (Act.REPLACE, (M2, M1), ROLLING_BACK, "m2 failed at the new body")),
    ("rolling back: a re-pinned machine comes up before the next",
     rollout(ROLLING_BACK, 1, "x", 2), world(m1=up(NEW), m2=Observed(OLD)),
     (Act.WAIT, (M2,), ROLLING_BACK, "x")),
    ("rolled back everywhere: failed, with the reason",
     rollout(ROLLING_BACK, 1, "m2 failed", 2), world(), (Act.FINISH, (), FAILED, "m2 failed")),
]


@pytest.mark.parametrize(("record", "seen", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_global(
    record: Rollout, seen: dict[MachineID, Observed], expected: tuple[Act, tuple[str, ...], str, str]
) -> None:
    act, machines, phase, reason = expected
    decision = decide_global(record, seen, PLAIN, 1.0)
    assert (decision.act, decision.units, decision.rollout.phase) == (act, machines, phase)
    assert reason in decision.rollout.reason
    assert decision.rollout.units == (MON,) and decision.rollout.machines == MACHINES  # the Global record


def test_machines_are_the_members_with_the_unit_s_old_hash() -> None:
    view = machine_members(rollout(replaced=2))
    assert view.units == MACHINES and view.replaced == (M1, M2) and set(view.old.values()) == {OLD}


def test_dry_run_lists_the_machine_steps() -> None:
    assert global_steps(rollout(step=3), world()) == [(M1, M2, M3), (M4,)]
    assert global_steps(rollout(replaced=1), world(m1=up(NEW))) == [(M2,), (M3,), (M4,)]


def test_never_more_than_max_unavailable_machines_down_in_a_simulated_rollout() -> None:
    for step in (1, 2):
        record, seen = rollout(step=step), world()
        worst = 0
        for _ in range(50):
            decision = decide_global(record, seen, PLAIN, 0.0)
            record = decision.rollout
            if decision.act is Act.FINISH:
                break
            if decision.act is Act.REPLACE:
                machines = tuple(MachineID(m) for m in decision.units)
                record = dataclasses.replace(record, machines_replaced=(*record.machines_replaced, *machines))
                seen.update(dict.fromkeys(machines, Observed(NEW)))  # restarting
                worst = max(worst, sum(not s.active for s in seen.values()))
                seen.update(dict.fromkeys(machines, up(NEW)))
        assert record.phase == DONE and worst == step


def test_the_global_record_round_trips_and_hostile_machine_lists_are_refused() -> None:
    record = rollout(replaced=2)
    key = "/fleet/rollouts/mon.service"
    assert records.decode_rollout(key, records.encode_rollout(record)) == record
    text = records.encode_rollout(record).replace('"m1"', '"-bad/id"')
    with pytest.raises(records.BadRecord):
        records.decode_rollout(key, text)
