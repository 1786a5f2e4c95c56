"""Rolling updates (pure): which units to replace next, when a step is done, when to roll back.

A rollout takes ``units`` to the hash ``hash`` a step at a time. ``decide`` looks at the recorded rollout and
at what each unit is now (``Observed``: its record's hash and what systemd and the health check say) and
returns the next ``Decision``; ``fleetctl rolling-update`` writes what it says, waits, observes again and
asks again, so an interrupted rollout resumes from the record and the cluster as they are.

- Rolling: each unit's goal is the new hash. A unit at its goal must become healthy (active, its health
  check passing when it has one, and active for ``min_healthy`` seconds) before anything else is replaced.
  The next step replaces units still down first (that costs no availability), then up to
  ``max_unavailable`` running ones. When every unit is at its goal and healthy, the rollout is done.
- A unit failed at the new hash (systemd says so), or a step not healthy within ``step_timeout``, turns the
  rollout back: each replaced unit's goal becomes its old hash, restored by the same steps; when every one
  is restored and healthy (or the roll back itself cannot finish) the rollout has failed, with the reason.

Units that left the cluster during the rollout (destroyed) are skipped, and so are units someone replaced
with a third body meanwhile, when rolling back.

A Global unit is rolled machine by machine (``decide_global``): every machine that ran it is first held at
the old hash by a hash pin, then the unit is given the new body; each step removes the pins of
``max_unavailable`` machines (the members of the same decisions, by machine ID), a roll back pins the
replaced machines to the old hash again. A machine's hash is the one it is meant to run: its pin's, or the
unit's when it has none; a machine that left the cluster is skipped.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from fleetd.model import MachineID, UnitName
from fleetd.registry.records import Rollout

__all__ = [
    "DONE",
    "FAILED",
    "ROLLING",
    "ROLLING_BACK",
    "Act",
    "Decision",
    "Observed",
    "Settings",
    "decide",
    "decide_global",
    "dry_run_steps",
    "global_steps",
    "machine_members",
]

ROLLING, ROLLING_BACK, DONE, FAILED = "rolling", "rolling-back", "done", "failed"


class Act(enum.Enum):
    REPLACE = "replace"  # write each unit's goal body (the new one, or its old one when rolling back)
    WAIT = "wait"  # units at their goal are not healthy yet
    FINISH = "finish"  # nothing more to do: the record's phase says how it ended


@dataclass(frozen=True, slots=True)
class Observed:
    """One unit now. ``hash`` is its record's ('' when it is gone); the rest is about that hash:
    ``launched`` its target is launched; ``active``/``failed`` what systemd reports; ``check`` the health
    check's last result (None: none ran yet, or the unit has none); ``active_for`` seconds seen active."""

    hash: str
    launched: bool = True
    active: bool = False
    failed: bool = False
    check: bool | None = None
    active_for: float = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    min_healthy: float = 0.0  # seconds a replaced unit must stay active
    has_check: bool = False  # the units have a HealthCheck= command: it must pass
    step_timeout: float = 300.0  # seconds a step may take to become healthy


@dataclass(frozen=True, slots=True)
class Decision:
    act: Act
    rollout: Rollout  # the record as it should be stored now (its phase and reason may have changed)
    units: tuple[UnitName, ...] = ()  # to replace (REPLACE) or waited for (WAIT)
    why: str = ""  # for WAIT: what is awaited


def _goal(rollout: Rollout, name: UnitName) -> str | None:
    """The hash ``name`` must reach in this phase; None when it takes no part (any more)."""
    if rollout.phase == ROLLING:
        return rollout.hash
    old = rollout.old.get(name)
    return None if old is None or old == rollout.hash or name not in rollout.replaced else old


def _healthy(seen: Observed, settings: Settings) -> bool:
    if not seen.launched:
        return True  # a unit not meant to run is done once its record has the goal's hash
    if not seen.active or seen.failed or seen.active_for < settings.min_healthy:
        return False
    return seen.check is True if settings.has_check else True


def _unhealthy_why(name: UnitName, seen: Observed, settings: Settings) -> str:
    if seen.failed:
        return f"{name} failed"
    if not seen.active:
        return f"{name} is not active"
    if settings.has_check and seen.check is not True:
        return f"{name}'s health check {'has not run' if seen.check is None else 'fails'}"
    return f"{name} has been active {seen.active_for:.0f}s of {settings.min_healthy:g}s"


def _turn_back(rollout: Rollout, reason: str) -> Rollout:
    return replace(rollout, phase=ROLLING_BACK, reason=reason)


def decide(
    rollout: Rollout, observed: Mapping[UnitName, Observed], settings: Settings, step_age: float
) -> Decision:
    """The next thing to do. ``step_age``: seconds since the current step's units were replaced (or since
    the wait began, after a resume)."""
    if rollout.phase in (DONE, FAILED):
        return Decision(Act.FINISH, rollout)
    present = [n for n in rollout.units if observed.get(n, Observed("")).hash]
    at_goal: list[UnitName] = []
    pending: list[UnitName] = []
    for name in present:
        goal, seen = _goal(rollout, name), observed[name]
        if goal is None:
            continue
        if seen.hash == goal:
            at_goal.append(name)
        elif rollout.phase == ROLLING or seen.hash == rollout.hash:  # rolling back: only what we replaced
            pending.append(name)
    broken = [n for n in at_goal if observed[n].failed and observed[n].launched]
    if broken:
        if rollout.phase == ROLLING:
            return decide(_turn_back(rollout, f"{broken[0]} failed at the new body"), observed, settings, 0.0)
        return Decision(Act.FINISH, replace(rollout, phase=FAILED, reason=(
            f"{rollout.reason}; rolling back: {broken[0]} failed at its old body too")))
    waiting = [n for n in at_goal if not _healthy(observed[n], settings)]
    if waiting:
        why = _unhealthy_why(waiting[0], observed[waiting[0]], settings)
        if step_age < settings.step_timeout:
            return Decision(Act.WAIT, rollout, tuple(waiting), why)
        timed_out = f"not healthy within {settings.step_timeout:g}s ({why})"
        if rollout.phase == ROLLING:
            return decide(_turn_back(rollout, timed_out), observed, settings, 0.0)
        return Decision(Act.FINISH, replace(rollout, phase=FAILED, reason=(
            f"{rollout.reason}; rolling back: {timed_out}")))
    if not pending:
        return Decision(Act.FINISH, replace(rollout, phase=DONE if rollout.phase == ROLLING else FAILED))
    return Decision(Act.REPLACE, rollout, _next_step(pending, observed, rollout.max_unavailable))


def _next_step(
    pending: Sequence[UnitName], observed: Mapping[UnitName, Observed], max_unavailable: int
) -> tuple[UnitName, ...]:
    """Units already down (replacing them costs nothing), then up to ``max_unavailable`` running ones."""
    down = [n for n in pending if observed[n].launched and not observed[n].active]
    up = [n for n in pending if n not in down]
    return tuple(down + up[:max_unavailable])


def dry_run_steps(rollout: Rollout, observed: Mapping[UnitName, Observed]) -> list[tuple[UnitName, ...]]:
    """The steps ``decide`` takes when every replaced unit comes up healthy (``--dry-run``)."""
    seen = dict(observed)
    steps: list[tuple[UnitName, ...]] = []
    everyone_healthy = Settings()
    for _ in range(len(rollout.units) + 1):
        decision = decide(rollout, seen, everyone_healthy, 0.0)
        if decision.act is not Act.REPLACE:
            break
        steps.append(decision.units)
        for name in decision.units:
            seen[name] = replace(seen[name], hash=rollout.hash, active=True, failed=False)
    return steps


def machine_members(rollout: Rollout) -> Rollout:
    """A Global unit's rollout as ``decide`` sees it: each machine a member (its ID in a unit name's place),
    each one's old hash the unit's, the replaced members the machines unpinned so far."""
    old_hash = rollout.old.get(rollout.name, rollout.hash)
    members = tuple(UnitName(m) for m in rollout.machines)
    replaced_ = tuple(UnitName(m) for m in rollout.machines_replaced)
    return replace(rollout, units=members, old=dict.fromkeys(members, old_hash), replaced=replaced_)


def decide_global(
    rollout: Rollout, observed: Mapping[MachineID, Observed], settings: Settings, step_age: float
) -> Decision:
    """``decide`` machine by machine: ``observed`` is the unit on each machine (at the hash it is meant to
    run there); the decision's units are machine IDs (unpin them while rolling, pin them back to the old
    hash while rolling back), its record the Global rollout's."""
    members = {UnitName(m): seen for m, seen in observed.items()}
    decision = decide(machine_members(rollout), members, settings, step_age)
    after = replace(rollout, phase=decision.rollout.phase, reason=decision.rollout.reason)
    return replace(decision, rollout=after)


def global_steps(rollout: Rollout, observed: Mapping[MachineID, Observed]) -> list[tuple[MachineID, ...]]:
    """The machine steps ``decide_global`` takes when every machine comes up healthy (``--dry-run``)."""
    members = {UnitName(m): seen for m, seen in observed.items()}
    return [tuple(MachineID(m) for m in step) for step in dry_run_steps(machine_members(rollout), members)]
