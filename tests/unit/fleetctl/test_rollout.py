"""The rolling-update decisions: which units next, when a step is done, when to roll back (tables)."""

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
    decide,
    dry_run_steps,
)
from fleetd.model import UnitName
from fleetd.registry.records import Rollout

OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40
UNITS = tuple(UnitName(f"web@{i}.service") for i in range(1, 6))
W1, W2, W3, W4, W5 = UNITS


def rollout(phase: str = ROLLING, step: int = 2, reason: str = "", replaced: int = 0) -> Rollout:
    """A rollout of web@1..5 from OLD to NEW; its first ``replaced`` units were given the new body."""
    return Rollout(UnitName("web@.service"), NEW, "new", UNITS, dict.fromkeys(UNITS, OLD), {OLD: "old"}, step,
                   phase, reason, UNITS[:replaced])


def up(unit_hash: str = OLD, **kw: object) -> Observed:
    return dataclasses.replace(Observed(unit_hash, active=True, active_for=100.0), **kw)  # type: ignore[arg-type]


def world(**changes: Observed) -> dict[UnitName, Observed]:
    seen = dict.fromkeys(UNITS, up())
    for key, value in changes.items():
        seen[UnitName(f"web@{key[1:]}.service")] = value
    return seen


CHECKED = Settings(min_healthy=5.0, has_check=True, step_timeout=60.0)
PLAIN = Settings(step_timeout=60.0)

# (id, rollout, observed, settings, step age) -> (act, units, phase after, reason contains)
CASES = [
    ("fresh: the first step replaces max-unavailable units in order",
     rollout(), world(), PLAIN, 0.0, (Act.REPLACE, (W1, W2), ROLLING, "")),
    ("units already down go first, beside max-unavailable running ones",
     rollout(), world(w4=Observed(OLD, active=False)), PLAIN, 0.0, (Act.REPLACE, (W4, W1, W2), ROLLING, "")),
    ("a replaced unit not active yet: wait for it",
     rollout(), world(w1=Observed(NEW), w2=up(NEW)), PLAIN, 1.0, (Act.WAIT, (W1,), ROLLING, "")),
    ("health check not passed yet: wait",
     rollout(), world(w1=up(NEW, check=None), w2=up(NEW, check=True)), CHECKED, 1.0,
     (Act.WAIT, (W1,), ROLLING, "")),
    ("active for less than the minimum healthy time: wait",
     rollout(), world(w1=up(NEW, check=True, active_for=1.0)), CHECKED, 1.0, (Act.WAIT, (W1,), ROLLING, "")),
    ("a step healthy: the next step",
     rollout(), world(w1=up(NEW, check=True), w2=up(NEW, check=True)), CHECKED, 9.0,
     (Act.REPLACE, (W3, W4), ROLLING, "")),
    ("the last unit: a step smaller than max-unavailable",
     rollout(), world(w1=up(NEW), w2=up(NEW), w3=up(NEW), w4=up(NEW)), PLAIN, 0.0,
     (Act.REPLACE, (W5,), ROLLING, "")),
    ("every unit at the new body and healthy: done",
     rollout(), dict.fromkeys(UNITS, up(NEW)), PLAIN, 0.0, (Act.FINISH, (), DONE, "")),
    ("a destroyed unit is skipped",
     rollout(), {**dict.fromkeys(UNITS, up(NEW)), W5: Observed("")}, PLAIN, 0.0, (Act.FINISH, (), DONE, "")),
    ("a unit not meant to run counts once its record has the new hash",
     rollout(), {**dict.fromkeys(UNITS, up(NEW)), W5: Observed(NEW, launched=False)}, PLAIN, 0.0,
     (Act.FINISH, (), DONE, "")),
    ("systemd reports a replaced unit failed: roll the replaced units back, the failed one first",
     rollout(replaced=2), world(w1=up(NEW), w2=Observed(NEW, failed=True)), PLAIN, 1.0,
     (Act.REPLACE, (W2, W1), ROLLING_BACK, "web@2.service failed at the new body")),
    ("a step not healthy within the step timeout: roll back",
     rollout(replaced=2), world(w1=up(NEW, check=False), w2=up(NEW, check=True)), CHECKED, 61.0,
     (Act.REPLACE, (W1, W2), ROLLING_BACK, "not healthy within 60s (web@1.service's health check fails)")),
    ("rolling back: restored units come up before the next ones are restored",
     rollout(ROLLING_BACK, 1, "x", 3), world(w1=up(NEW), w2=up(NEW), w3=Observed(OLD)), PLAIN, 1.0,
     (Act.WAIT, (W3,), ROLLING_BACK, "x")),
    ("rolling back: one step at a time, units never replaced are left alone",
     rollout(ROLLING_BACK, 1, "x", 2), world(w1=up(NEW), w2=up(NEW), w4=Observed(OLD, active=False)), PLAIN,
     1.0,
     (Act.REPLACE, (W1,), ROLLING_BACK, "x")),
    ("rolling back: a unit someone replaced with a third body is left alone",
     rollout(ROLLING_BACK, 1, "x", 1), world(w1=up(OTHER)), PLAIN, 1.0, (Act.FINISH, (), FAILED, "x")),
    ("rolled back and healthy: the rollout failed, with its reason",
     rollout(ROLLING_BACK, 2, "web@2.service failed", 2), world(), PLAIN, 0.0,
     (Act.FINISH, (), FAILED, "web@2.service failed")),
    ("failing at the old body too while rolling back: failed, saying both",
     rollout(ROLLING_BACK, 2, "x", 1), world(w1=Observed(OLD, failed=True)), PLAIN, 0.0,
     (Act.FINISH, (), FAILED, "x; rolling back: web@1.service failed at its old body too")),
    ("a finished rollout stays finished",
     rollout(DONE), world(), PLAIN, 0.0, (Act.FINISH, (), DONE, "")),
]


@pytest.mark.parametrize(("record", "seen", "settings", "age", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decide(
    record: Rollout, seen: dict[UnitName, Observed], settings: Settings, age: float,
    expected: tuple[Act, tuple[UnitName, ...], str, str],
) -> None:
    act, units, phase, reason = expected
    decision = decide(record, seen, settings, age)
    assert (decision.act, decision.units, decision.rollout.phase) == (act, units, phase)
    assert reason in decision.rollout.reason
    if act is Act.WAIT:
        assert decision.why


def test_dry_run_steps_cover_every_unit_once_in_steps_of_max_unavailable() -> None:
    assert dry_run_steps(rollout(step=2), world()) == [(W1, W2), (W3, W4), (W5,)]
    assert dry_run_steps(rollout(step=2), world(w3=up(NEW))) == [(W1, W2), (W4, W5)]


def test_never_more_than_max_unavailable_running_units_down_in_a_simulated_rollout() -> None:
    """Simulate: a replaced unit is down for two observations, then healthy; count units down each time."""
    for step in (1, 2, 3):
        record, seen = rollout(step=step), world()
        down_since: dict[UnitName, int] = {}
        worst = 0
        for tick in range(100):
            for name, since in list(down_since.items()):
                if tick - since >= 2:
                    seen[name] = up(NEW)
                    del down_since[name]
            decision = decide(record, seen, PLAIN, 0.0)
            record = decision.rollout
            if decision.act is Act.FINISH:
                break
            for name in decision.units if decision.act is Act.REPLACE else ():
                seen[name], down_since[name] = Observed(NEW), tick
                record = dataclasses.replace(record, replaced=(*record.replaced, name))
            worst = max(worst, sum(not s.active for s in seen.values()))
        assert record.phase == DONE
        assert worst == step
