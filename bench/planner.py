"""Engine planner benchmark: ``python -m bench.planner`` prints units/s for each case and the ratio.

Cases: 10,000 units onto 1,000 machines (half the units with MachineMetadata); 5,000 unconstrained units
onto 5,000 machines; 5,000 ``web@N.service`` with ``Conflicts=web@*`` onto 5,000 machines, then onto
1,000 (4,000 can never be placed); and a pass over 10,000 placed units with nothing to do.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from fleetd.engine.plan import Schedule, plan_cluster
from fleetd.model import MachineID, MachineState, Requirements, TargetState, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit

REGIONS = ("us-east", "us-west", "eu-central", "ap-south")


def _unit(name: str, requirements: Requirements) -> Unit:
    digest = hashlib.sha1(name.encode()).hexdigest()
    return Unit(UnitName(name), digest, requirements, TargetState.LAUNCHED)


def _machines(count: int, *, metadata: bool = False) -> dict[MachineID, MachineState]:
    out: dict[MachineID, MachineState] = {}
    for i in range(count):
        machine_id = MachineID(hashlib.md5(f"machine-{i}".encode()).hexdigest())
        labels = {"region": REGIONS[i % 4], "disk": "ssd" if i % 3 else "hdd"} if metadata else {}
        out[machine_id] = MachineState(machine_id, metadata=labels)
    return out


def mixed(units: int = 10_000, machines: int = 1_000) -> ClusterSnapshot:
    """Half the units plain, half wanting a region (and some an SSD)."""
    table: dict[UnitName, Unit] = {}
    for i in range(units):
        wanted: dict[str, frozenset[str]] = {}
        if i % 2:
            wanted["region"] = frozenset({REGIONS[i % 4]})
            if i % 5 == 1:
                wanted["disk"] = frozenset({"ssd"})
        unit = _unit(f"app-{i}.service", Requirements(metadata=wanted))
        table[unit.name] = unit
    return ClusterSnapshot(1, _machines(machines, metadata=True), table, {})


def web(units: int = 5_000, machines: int = 5_000, *, conflicts: bool) -> ClusterSnapshot:
    requirements = Requirements(conflicts=("web@*",) if conflicts else ())
    table = {u.name: u for u in (_unit(f"web@{i}.service", requirements) for i in range(units))}
    return ClusterSnapshot(1, _machines(machines), table, {})


def blocked(units: int = 5_000, machines: int = 5_000, *, conflicts: bool) -> ClusterSnapshot:
    """The adversarial Conflicts case: the least-loaded machines are the blocked ones. Half the machines run
    one ``db@N`` each (load 1), the other half two filler units each (load 2); ``units`` new ``web@N`` units
    (with ``Conflicts=db@*``, or without for the baseline) must skip every least-loaded machine."""
    ids = sorted(_machines(machines))
    table: dict[UnitName, Unit] = {}
    schedule: dict[UnitName, ScheduledUnit] = {}
    for index, machine in enumerate(ids):
        names = [f"db@{index}.service"] if index % 2 == 0 else [f"fill-{index}-{k}.service" for k in (0, 1)]
        for name in names:
            placed_unit = _unit(name, Requirements())
            table[placed_unit.name] = placed_unit
            schedule[placed_unit.name] = ScheduledUnit(machine, placed_unit.hash, TargetState.LAUNCHED)
    requirements = Requirements(conflicts=("db@*",) if conflicts else ())
    for i in range(units):
        new = _unit(f"web@{i}.service", requirements)
        table[new.name] = new
    return ClusterSnapshot(1, {m: MachineState(m) for m in ids}, table, schedule)


def placed(snap: ClusterSnapshot) -> ClusterSnapshot:
    """``snap`` after applying its plan: every unit where the planner put it (a steady state)."""
    schedule = {
        action.unit: ScheduledUnit(action.machine_id, action.hash, action.state)
        for action in plan_cluster(snap).actions
        if isinstance(action, Schedule)
    }
    return ClusterSnapshot(snap.revision + 1, snap.machines, snap.units, schedule)


def rate(snap: ClusterSnapshot, placements: int, rounds: int = 5) -> tuple[float, float]:
    """(best seconds for one plan, units per second); checks the plan places ``placements`` units."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        plan = plan_cluster(snap)
        best = min(best, time.perf_counter() - started)
    count = sum(isinstance(action, Schedule) for action in plan.actions)
    assert count == placements, f"placed {count}, expected {placements}"
    return best, len(snap.units) / best


def main() -> None:
    cases: list[tuple[str, Callable[[], ClusterSnapshot], int]] = [
        ("10000 units / 1000 machines, half with MachineMetadata", mixed, 10_000),
        ("5000 web@N / 5000 machines, unconstrained", lambda: web(conflicts=False), 5_000),
        ("5000 web@N / 5000 machines, Conflicts=web@*", lambda: web(conflicts=True), 5_000),
        (
            "5000 web@N / 1000 machines, Conflicts=web@* (4000 wait)",
            lambda: web(machines=1_000, conflicts=True),
            1_000,
        ),
        ("steady state: re-plan 10000 placed units / 1000 machines", lambda: placed(mixed()), 0),
    ]
    rates: list[float] = []
    for label, build, placements in cases:
        seconds, per_second = rate(build(), placements)
        rates.append(per_second)
        print(f"{label}: {seconds:.3f} s, {per_second:,.0f} units/s")
    print(f"conflicts / unconstrained rate: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
