"""A partition on the real cluster: one machine cut off from etcd only, through its own proxy
(devcluster/proxy.py, real sockets; the machine keeps running and so do the others).

Two units that conflict with each other run on two of the 3 machines; the machine running
``conflict.0.service`` is cut off. After its lease lapses the engine re-places the unit on the free
machine, and the cut-off agent fences it (fence_units=conflicts, the default): the unit runs on two
machines for at most ``agent_ttl`` + 2 s. When the partition heals, nothing runs twice and the healthy
side's unit is not restarted. A sampler reads systemd in every machine twice a second throughout. Each run
prints one line (``partition ...``); docs/reliability.md quotes them.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.e2e.harness import AGENT_TTL, FleetCluster, eventually
from tests.integration.e2e.sampling import SAMPLE, Run, Timeline, placement, sampling, systemd_runs
from tests.integration.e2e.waits import active_units, list_units, wait_for_machines

MOVED, KEPT = "conflict.0.service", "conflict.1.service"  # Conflicts=conflict.*: never on one machine
QUIET = 3 * AGENT_TTL  # after the heal: re-registration, the settle time, then a margin
WINDOW_BOUND = AGENT_TTL + 2.0


@pytest.mark.parametrize("run", [1, 2])
def test_a_partitioned_machine_fences_its_conflicts_unit_while_it_moves(
    fleet: FleetCluster, run: int
) -> None:
    fleet.ok("start", MOVED, KEPT)
    before = placement(fleet, (MOVED, KEPT))
    victim = fleet.by_id(before[MOVED].machine)
    timeline = Timeline(before)
    with fleet.partitionable(victim) as proxy:
        wait_for_machines(fleet, len(fleet.machines))
        with sampling(fleet, timeline):
            cut = time.monotonic()
            proxy.cut()

            def elsewhere(runs: list[Run]) -> bool:
                return any(r.machine != victim.machine_id for r in runs)

            try:
                eventually(lambda: systemd_runs(fleet, [MOVED])[MOVED], elsewhere, 60, f"{MOVED} re-placed")
            except AssertionError:
                print(fleet.journal(victim, "-u", "fleetd.service", "-n", "60"))
                raise
            eventually(
                lambda: systemd_runs(fleet, [MOVED])[MOVED],
                lambda runs: all(r.machine != victim.machine_id for r in runs),
                60,
                f"{MOVED} fenced on the cut-off machine",
            )
            healed = time.monotonic()
            proxy.heal()
            wait_for_machines(fleet, len(fleet.machines))
            quiet_until = time.monotonic() + QUIET
            while time.monotonic() < quiet_until:  # watch for a late double run or restart meanwhile
                time.sleep(SAMPLE)
        after = placement(fleet, (MOVED, KEPT))
        listed = active_units(list_units(fleet))
    fenced_at = timeline.first(MOVED, lambda runs: all(r.machine != victim.machine_id for r in runs), cut)
    placed_at = timeline.first(MOVED, lambda runs: any(r.machine != victim.machine_id for r in runs), cut)
    doubled_samples, window = timeline.doubled_window(MOVED)
    late = [at for at, runs in timeline.seen if at > healed and len({r.machine for r in runs[MOVED]}) > 1]
    line = (
        f"partition run={run} ttl={AGENT_TTL:g}s fenced_after={(fenced_at or 0) - cut:.1f}s"
        f" placed_after={(placed_at or 0) - cut:.1f}s doubled_samples={doubled_samples}"
        f" double_window<={window:.1f}s samples={timeline.samples} kept_restarted={KEPT in timeline.stopped}"
    )
    print(line)
    assert window <= WINDOW_BOUND, line
    assert not late, f"{MOVED} ran twice after the heal: {line}"
    assert KEPT not in timeline.stopped, f"{KEPT} on the healthy side stopped or restarted: {line}"
    assert after[KEPT] == before[KEPT], line
    assert after[MOVED].machine != victim.machine_id, line
    assert listed == {MOVED: [after[MOVED].machine], KEPT: [before[KEPT].machine]}, line
