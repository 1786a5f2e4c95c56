"""fleetctl as fleet users typed it, on the real cluster: global flags after the command (cobra's persistent
flags), and a remote command handed to the remote shell whole (pipes work)."""

from __future__ import annotations

from tests.integration.e2e.harness import FleetCluster


def test_global_flags_work_after_the_command_name(fleet: FleetCluster) -> None:
    machine = fleet.machines[0]
    # endpoint, identity, known hosts and user all after the command, as fleet's scripts wrote them
    code, out, err = fleet.fleetctl(
        "list-machines", "--no-legend", "--full", "--endpoint", fleet.etcd.endpoint,
        endpoint=False, ssh=False,
    )
    assert code == 0, err
    assert {line.split()[0] for line in out.splitlines()} == {m.machine_id for m in fleet.machines}
    code, out, err = fleet.fleetctl(
        "list-machines", "--no-legend", "--tunnel", machine.address, *fleet.ssh_flags(), endpoint=True,
        ssh=False,
    )
    assert code == 0, err
    assert len(out.splitlines()) == len(fleet.machines)


def test_a_remote_command_goes_to_the_remote_shell_whole(fleet: FleetCluster) -> None:
    machine = fleet.machines[1]
    out = fleet.ok("ssh", machine.machine_id, "echo fleet-pipe | tr a-z A-Z")
    assert out == "FLEET-PIPE\n"
    out = fleet.ok("ssh", machine.machine_id, "hostname", "&&", "echo", "two words")
    assert out == f"{machine.name}\ntwo words\n"
