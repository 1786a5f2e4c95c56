"""Faults on the real cluster: etcd outages of three agent TTLs stop, move and double nothing.

DESIGN.md §4 (an etcd outage is not a machine failure) and §5 (losing etcd never stops units), measured on
3 nspawn machines with a 5 s ``agent_ttl`` and ``fence_units=none`` (fencing, on by default for Conflicts
units, stops them in an outage longer than the TTL: test_partition.py). Three units that conflict with
each other run one per machine.
A sampler thread (``sampling.py``) reads systemd in every machine about twice a second during each
outage and its recovery. Each run prints one line (``fault=... stopped=... moved=... doubled=...
recovery=...``); docs/reliability.md quotes them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from tests.integration.e2e.harness import AGENT_TTL, FleetCluster, eventually
from tests.integration.e2e.sampling import RECOVERY, SAMPLE, Tally, placement, sampling
from tests.integration.e2e.waits import active_units, list_units, wait_for_machines

OUTAGE = 3 * AGENT_TTL
UNITS = tuple(f"conflict.{n}.service" for n in range(3))  # Conflicts=conflict.*: one per machine
# After etcd is back: machines re-register within a keep-alive, the engine's grace and the agents' settle
# time (one TTL each) run out; watch that long again for a late stop or move.
QUIET = 3 * AGENT_TTL


def pause(fleet: FleetCluster) -> None:
    fleet.etcd.pause()
    time.sleep(OUTAGE)  # the outage itself: its length is the point, there is nothing to wait for
    fleet.etcd.resume()


def restart(fleet: FleetCluster) -> None:
    fleet.etcd.stop()
    time.sleep(OUTAGE)  # as above
    fleet.etcd.start()


def settled(fleet: FleetCluster, expected: dict[str, list[str]]) -> None:
    """All machines listed again and every unit listed active where it was."""
    wait_for_machines(fleet, len(fleet.machines), timeout=RECOVERY)
    eventually(
        lambda: active_units(list_units(fleet)), lambda a: a == expected, RECOVERY, "units listed back"
    )


@contextlib.contextmanager
def no_fencing(fleet: FleetCluster) -> Iterator[None]:
    """fence_units=none on every machine for the block. With the default (conflicts) an agent cannot tell
    etcd's outage from its own partition and stops its Conflicts units once its lease has lapsed."""
    try:
        for machine in fleet.machines:
            fleet.set_config(machine, "fence_units", "none")
        yield
    finally:
        for machine in fleet.machines:
            fleet.set_config(machine, "fence_units", "conflicts")


def test_etcd_outages_of_three_ttls_stop_move_and_double_nothing(fleet: FleetCluster) -> None:
    with no_fencing(fleet):
        outages(fleet)


def outages(fleet: FleetCluster) -> None:
    fleet.ok("start", *UNITS)
    before = placement(fleet, UNITS)
    assert len({run.machine for run in before.values()}) == len(UNITS)
    expected = {unit: [run.machine] for unit, run in before.items()}
    faults: list[tuple[str, Callable[[FleetCluster], None]]] = [
        ("pause", pause), ("pause", pause), ("pause", pause), ("stop-start", restart),
    ]
    report = []
    for number, (name, fault) in enumerate(faults, 1):
        tally = Tally(before)
        with sampling(fleet, tally):
            fault(fleet)
            back = time.monotonic()
            settled(fleet, expected)
            recovery = time.monotonic() - back
            quiet_until = time.monotonic() + QUIET
            while time.monotonic() < quiet_until:  # watch for a late stop or move, sampling meanwhile
                assert active_units(list_units(fleet)) == expected
                time.sleep(SAMPLE)
        after = placement(fleet, UNITS)
        moved = sorted(u for u in UNITS if after[u].machine != before[u].machine)
        line = (
            f"fault={name} run={number} outage={OUTAGE:g}s ttl={AGENT_TTL:g}s units={len(UNITS)}"
            f" stopped={len(tally.stopped)} moved={len(moved)} doubled={len(tally.doubled)}"
            f" recovery={recovery:.1f}s samples={tally.samples}"
        )
        print(line)
        report.append(line)
        assert not tally.stopped and not moved and not tally.doubled, "\n".join(report)
        assert after == before, "\n".join(report)
