"""drain, uncordon and the machine state in list-machines, on the fake cluster (no engine: the tests write
what the engine would)."""

from __future__ import annotations

from dataclasses import replace

from fleetd.model import MachineState, TargetState, UnitName
from fleetd.registry import keyspace as ks
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, MACHINE_B, FakeCluster, running

A, B = MACHINE_A.id, MACHINE_B.id
PINNED = HELLO + f"\n[X-Fleet]\nMachineID={A}\n"
FOLLOWER = HELLO + "\n[X-Fleet]\nMachineOf=pinned.service\n"


def _cluster(agent: bool = True) -> FakeCluster:
    cluster = FakeCluster(agent=agent)
    cluster.add_machines(MACHINE_A, MACHINE_B)
    return cluster


def _schedule(cluster: FakeCluster, machine: MachineState, name: str, text: str) -> str:
    """Submit ``name`` launched and schedule it to ``machine`` (as the engine would); returns its hash."""
    unit = cluster.submit(name, text, TargetState.LAUNCHED)
    key = cluster.registry.keys.scheduled(machine.id, name)
    cluster.run(cluster.kv.put(key, ks.encode_schedule(unit.hash, TargetState.LAUNCHED)))
    return unit.hash


def test_drain_cordons_the_machine_and_lists_the_units_that_stay() -> None:
    cluster = _cluster()
    _schedule(cluster, MACHINE_A, "pinned.service", PINNED)
    _schedule(cluster, MACHINE_A, "follower.service", FOLLOWER)
    _schedule(cluster, MACHINE_A, "web.service", HELLO)
    result = cluster.invoke(["drain", "--no-block", "1a2b"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Machine {A} cordoned\n"
        f"Unit follower.service stays on {A} (follows its MachineOf peer pinned.service)\n"
        f"Unit pinned.service stays on {A} (pinned with MachineID={A})\n"
    )
    assert cluster.run(cluster.kv.get(f"{cluster.registry.keys.cordons}{A}")) is not None
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "machine,state"])
    assert listed.stdout == "1a2b3c4d...\tcordoned\n9f8e7d6c...\tschedulable\n"


def test_uncordon_makes_the_machine_schedulable_again() -> None:
    cluster = _cluster()
    assert cluster.invoke(["drain", "--no-block", A]).exit_code == 0
    result = cluster.invoke(["uncordon", "1a2b3c4d"])
    assert (result.exit_code, result.stdout) == (0, f"Machine {A} uncordoned\n")
    again = cluster.invoke(["uncordon", A])
    assert again.stdout == f"Machine {A} was not cordoned\n"
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "state"])
    assert listed.stdout == "schedulable\nschedulable\n"


def test_drain_waits_until_the_moved_units_are_active_on_another_machine() -> None:
    cluster = _cluster(agent=False)
    unit_hash = _schedule(cluster, MACHINE_A, "web.service", HELLO)
    cluster.publish(running("web.service", unit_hash, MACHINE_A))  # still up on the drained machine
    cluster.publish(running("web.service", unit_hash, MACHINE_B))  # and up elsewhere: what drain waits for
    result = cluster.invoke(["drain", "--timeout", "5s", A])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Machine {A} cordoned\nUnit web.service launched on 9f8e7d6c...\nMachine {A} drained\n"
    )


def test_drain_does_not_count_the_unit_still_running_on_the_drained_machine() -> None:
    cluster = _cluster(agent=False)
    unit_hash = _schedule(cluster, MACHINE_A, "web.service", HELLO)
    cluster.publish(running("web.service", unit_hash, MACHINE_A))
    result = cluster.invoke(["drain", "--timeout", "0.3s", A])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"Error draining machine {A}: timed out waiting for unit web.service to report state launched"
    )


def test_drain_ends_with_the_engines_reason_for_a_unit_no_other_machine_can_run() -> None:
    cluster = _cluster(agent=False)
    unit_hash = _schedule(cluster, MACHINE_A, "db.service", HELLO)
    reason = "every machine able to run it is cordoned"
    key = cluster.registry.keys.unplaceable_unit(UnitName("db.service"))
    cluster.run(cluster.kv.put(key, ks.encode_unplaceable(ks.Unplaceable(unit_hash, reason))))
    result = cluster.invoke(["drain", "--timeout", "5s", A])
    assert result.exit_code == 1
    assert result.stderr == f"Error draining machine {A}: unit db.service cannot be placed: {reason}\n"


def test_drain_names_an_unknown_or_ambiguous_machine() -> None:
    cluster = _cluster()
    cluster.add_machines(replace(MACHINE_B, id=MACHINE_A.id[:4] + "ffff"))
    unknown = cluster.invoke(["drain", "nonesuch"])
    assert (unknown.exit_code, unknown.stderr) == (
        1, "Error: no machine nonesuch in the cluster (see fleetctl list-machines)\n"
    )
    ambiguous = cluster.invoke(["drain", "1a2b"])
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr == f"Error: machine 1a2b is ambiguous: {A}, 1a2bffff\n"


def test_list_machines_shows_the_cap() -> None:
    cluster = FakeCluster()
    cluster.add_machines(replace(MACHINE_A, max_units=20), MACHINE_B)
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "machine,cap"])
    assert listed.stdout == "1a2b3c4d...\t20\n9f8e7d6c...\t-\n"
