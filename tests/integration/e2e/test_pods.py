"""Pods: the example application pod and booted pod of deploy/examples run on ``role=pods`` machines,
registered with machined, their output in ``fleetctl journal`` and their processes in ``fleetctl status``;
``fleetctl ssh --pod`` runs commands inside them; ``destroy`` removes them from machined; a pod whose
machine's fleetd dies, or whose machine dies, comes up on the other ``role=pods`` machine. The podman
example runs its container in the unit's cgroup, ready when conmon says so.

The session cluster has roles web, web, db; for these tests the two web machines are given ``role=pods``
(``systemctl reload`` of fleetd with new metadata) and their own metadata back afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devcluster.nspawn import CHECKOUT, Machine
from tests.integration.e2e.harness import FleetCluster, eventually
from tests.integration.e2e.waits import active_units, list_units, wait_for_active

EXAMPLES = CHECKOUT / "deploy" / "examples"
APP = "app-pod@1.service"
BOOT = "boot-pod@1.service"
PODMAN = "podman-app@1.service"
MOVE_DEADLINE = 120  # agent_ttl, then the engine's pass, then the pod's start on a loaded machine


def _set_metadata(fleet: FleetCluster, machine: Machine, metadata: str) -> None:
    fleet.set_config(machine, "metadata", metadata)
    eventually(
        fleet.listed_machines,
        lambda rows: any(row[0] == machine.machine_id and row[-1] == metadata for row in rows),
        30, f"{machine.name} listed with {metadata}",
    )


@pytest.fixture
def pods_machines(fleet: FleetCluster) -> Iterator[tuple[Machine, ...]]:
    chosen = tuple(m for m in fleet.machines if "role=web" in fleet.metadata[m.name])
    assert len(chosen) == 2
    try:
        for machine in chosen:
            _set_metadata(fleet, machine, f"hostname={machine.name},role=pods")
        yield chosen
    finally:
        fleet.fleetctl("destroy", APP, BOOT, PODMAN)
        for machine in chosen:
            if not machine.running:
                machine.boot()
            if not fleet.fleetd_active(machine):
                fleet.restore_fleetd(machine)
            _set_metadata(fleet, machine, _sorted(fleet.metadata[machine.name]))


def _sorted(metadata: str) -> str:
    """Metadata as list-machines prints it: keys in order."""
    return ",".join(sorted(metadata.split(",")))


def _machines(machine: Machine) -> list[str]:
    """Names in ``machinectl list`` inside ``machine``."""
    out = machine.run(["machinectl", "list", "--no-legend"]).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _start_pods(fleet: FleetCluster) -> dict[str, list[str]]:
    code, out, err = fleet.fleetctl("start", APP, BOOT, cwd=EXAMPLES, timeout=180)
    assert code == 0, out + err
    return wait_for_active(fleet, 2, timeout=90)


def test_pods_run_registered_logged_and_destroyed(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    placed = _start_pods(fleet)
    hosts = {fleet.by_id(placed[APP][0]).name, fleet.by_id(placed[BOOT][0]).name}
    assert hosts <= {m.name for m in pods_machines}
    app_host, boot_host = fleet.by_id(placed[APP][0]), fleet.by_id(placed[BOOT][0])
    assert "app-1" in _machines(app_host)
    assert "boot-1" in _machines(boot_host)
    # the booted pod has its own machine ID
    pod_id = boot_host.run(["machinectl", "show", "boot-1", "-p", "Id", "--value"]).stdout.strip()
    assert len(pod_id) == 32 and pod_id != boot_host.machine_id

    journal = eventually(
        lambda: fleet.fleetctl("journal", "--lines", "20", APP),
        lambda result: result[0] == 0 and "app-1: hello from the application pod" in result[1],
        30, "the application pod's lines in fleetctl journal",
    )
    assert "systemd-nspawn" in journal[1]
    code, status, err = fleet.fleetctl("status", APP)
    assert code == 0, status + err
    assert "active (running)" in status
    assert "/machine.slice/app-pod@1.service" in status
    assert "sd-stubinit" in status and "hello from the application pod" in status
    code, status, err = fleet.fleetctl("status", BOOT)
    assert code == 0, status + err
    assert "init.scope" in status and "systemd-journald" in status
    # the booted pod's console (its systemd's boot messages) is the unit's output
    eventually(
        lambda: fleet.fleetctl("journal", "--lines", "200", BOOT),
        lambda result: result[0] == 0 and "Reached target" in result[1],
        30, "the booted pod's boot messages in fleetctl journal",
    )

    fleet.ok("destroy", APP, BOOT)
    eventually(lambda: list_units(fleet), lambda rows: rows == [], 60, "no pod units left")
    eventually(lambda: _machines(app_host) + _machines(boot_host), lambda names: names == [], 60,
               "the pods gone from machinectl list")


def test_ssh_into_each_kind_of_pod(fleet: FleetCluster, pods_machines: tuple[Machine, ...]) -> None:
    _start_pods(fleet)
    # an application pod: nsenter into its leader's namespaces; PID 1 there is nspawn's stub init
    code, out, err = fleet.fleetctl("ssh", "--pod", APP, "hostname; cat /proc/1/comm; exit 4")
    assert (code, out.split()) == (4, ["app-1", "(sd-stubinit)"]), err
    # a booted pod: a command through its own systemd (systemd-run --machine), its exit status back
    code, out, err = fleet.fleetctl("ssh", "--pod", BOOT, "--", "hostname; cat /proc/1/comm; exit 3")
    assert (code, out.split()) == (3, ["boot-1", "systemd"]), err
    # stdin reaches the command in the pod
    code, out, err = fleet.fleetctl("ssh", "--pod", APP, "tr a-z A-Z", input="inside\n")
    assert (code, out) == (0, "INSIDE\n"), err
    code, out, err = fleet.fleetctl("ssh", "--pod", "db.service")
    assert code == 1 and "Unit db.service does not exist." in err
    fleet.ok("submit", "hello@1.service")
    code, out, err = fleet.fleetctl("ssh", "--pod", "hello@1.service", "true")
    assert code == 1
    assert "Unit hello@1.service is not a pod: its ExecStart does not run systemd-nspawn" in err


def test_app_pod_moves_when_its_machines_fleetd_dies_and_leaves_the_old_machine_when_it_returns(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    code, out, err = fleet.fleetctl("start", APP, cwd=EXAMPLES, timeout=180)
    assert code == 0, out + err
    (first_id,) = wait_for_active(fleet, 1, timeout=90)[APP]
    first = fleet.by_id(first_id)
    (other,) = (m for m in pods_machines if m is not first)
    fleet.kill_fleetd(first)
    moved = eventually(
        lambda: active_units(list_units(fleet)).get(APP, []),
        lambda hosts: hosts == [other.machine_id], MOVE_DEADLINE, f"{APP} active on {other.name}",
    )
    assert moved == [other.machine_id]
    assert "app-1" in _machines(other)
    code, out, err = fleet.fleetctl("ssh", "--pod", APP, "hostname")
    assert (code, out) == (0, "app-1\n"), err
    # fleetd back on the first machine: it stops the copy it was left running there
    fleet.restore_fleetd(first)
    eventually(lambda: _machines(first), lambda names: "app-1" not in names, MOVE_DEADLINE,
               f"app-1 gone from machinectl list on {first.name}")


def test_booted_pod_moves_when_its_machine_dies(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    code, out, err = fleet.fleetctl("start", BOOT, cwd=EXAMPLES, timeout=180)
    assert code == 0, out + err
    (first_id,) = wait_for_active(fleet, 1, timeout=90)[BOOT]
    first = fleet.by_id(first_id)
    (other,) = (m for m in pods_machines if m is not first)
    first.kill()  # the machine's PID 1 and systemd-nspawn SIGKILLed: its fleetd, systemd and pod end at once
    eventually(
        lambda: active_units(list_units(fleet)).get(BOOT, []),
        lambda hosts: hosts == [other.machine_id], MOVE_DEADLINE, f"{BOOT} active on {other.name}",
    )
    assert "boot-1" in _machines(other)
    code, out, err = fleet.fleetctl("ssh", "--pod", BOOT, "cat /proc/1/comm")
    assert (code, out) == (0, "systemd\n"), err
    fleet.ok("destroy", BOOT)
    eventually(lambda: _machines(other), lambda names: names == [], 60, "boot-1 gone from machinectl list")


def _cgroup_of(machine: Machine, pid: str) -> str:
    """``pid``'s systemd cgroup, as the host sees it."""
    lines = machine.run(["cat", f"/proc/{pid}/cgroup"], check=True).stdout.splitlines()
    return next(line.split(":", 2)[2] for line in lines if line.split(":")[1] == "name=systemd")


def test_podman_container_runs_in_the_units_cgroup_and_systemd_supervises_it(
    fleet: FleetCluster, pods_machines: tuple[Machine, ...]
) -> None:
    code, out, err = fleet.fleetctl("start", PODMAN, cwd=EXAMPLES, timeout=240)
    assert code == 0, out + err
    (host_id,) = wait_for_active(fleet, 1, timeout=120)[PODMAN]
    host = fleet.by_id(host_id)
    assert host in pods_machines
    # readiness came from conmon (Type=notify): it is the unit's main process
    main_pid = host.run(["systemctl", "show", "-p", "MainPID", "--value", PODMAN], check=True).stdout.strip()
    assert host.run(["cat", f"/proc/{main_pid}/comm"], check=True).stdout.strip() == "conmon"
    container_pid = host.run(
        ["podman", "inspect", "--format", "{{.State.Pid}}", "podman-app-1"], check=True
    ).stdout.strip()
    unit_cgroup = host.run(["systemctl", "show", "-p", "ControlGroup", "--value", PODMAN], check=True)
    # seen from the host's cgroup namespace: the machine's tree sits under nspawn's own cgroup
    assert _cgroup_of(host, container_pid).endswith(unit_cgroup.stdout.strip())
    assert _cgroup_of(host, container_pid) == _cgroup_of(host, main_pid)

    journal = eventually(
        lambda: fleet.fleetctl("journal", "--lines", "20", PODMAN),
        lambda result: result[0] == 0 and "podman-app-1: hello from the container" in result[1],
        30, "the container's lines in fleetctl journal",
    )
    assert journal[0] == 0
    code, status, err = fleet.fleetctl("status", PODMAN)
    assert code == 0, status + err
    assert "active (running)" in status and "(conmon)" in status
    assert "hello from the container" in status  # the container's shell, in the unit's CGroup tree

    # the container dies: systemd sees it (conmon exits with its status) and the unit fails
    host.run(["kill", "-KILL", container_pid], check=True)
    eventually(lambda: fleet.systemd_active(host, PODMAN), lambda state: state == "failed", 60,
               f"{PODMAN} failed on {host.name}")
    fleet.ok("destroy", PODMAN)
    eventually(lambda: list_units(fleet), lambda rows: rows == [], 60, "no units left")
    assert host.run(["podman", "ps", "--all", "--quiet"], check=True).stdout.strip() == ""
