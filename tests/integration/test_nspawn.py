"""Real systemd machines (devcluster.nspawn): identity, SSH login, files, reboot and a clean stop by PID."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from devcluster.nspawn import Machine, boot_machines, client_key, stop_leftovers
from tests.integration.fixtures_cluster import Cluster


def _fields(stat: str) -> list[str]:
    return stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...


def _alive(pids: dict[int, str]) -> list[int]:
    """The PIDs still running the same process: a PID reused by another program does not count, and
    neither does a zombie (exited, waiting for the host's init to reap it)."""
    alive = []
    for pid, stat in pids.items():
        try:
            now = _fields(Path(f"/proc/{pid}/stat").read_text())
        except FileNotFoundError:
            continue
        if now[19] == _fields(stat)[19] and now[0] != "Z":
            alive.append(pid)
    return alive


def _snapshot(machine: Machine) -> dict[int, str]:
    pids = {}
    for pid in [*machine.processes(), machine.pid]:
        assert pid is not None
        with contextlib.suppress(FileNotFoundError):
            pids[pid] = Path(f"/proc/{pid}/stat").read_text()
    return pids


def test_a_machine_has_its_own_identity_and_sshd_and_powers_off_clean(machine: Machine) -> None:
    host_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    inside_id = machine.run(["cat", "/etc/machine-id"], check=True).stdout.strip()
    assert inside_id == machine.machine_id
    assert inside_id != host_id
    assert machine.run(["hostname"], check=True).stdout.strip() == machine.name
    assert machine.run(["systemctl", "is-system-running"]).stdout.strip() in ("running", "degraded")

    login = subprocess.run(
        machine.ssh_command("hostname"), check=False, capture_output=True, text=True, timeout=30
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == machine.name
    echoed = subprocess.run(
        machine.ssh_command("cat", "/etc/machine-id"), check=False, capture_output=True, text=True,
        timeout=30,
    )
    assert echoed.stdout.strip() == machine.machine_id

    pids = _snapshot(machine)
    assert len(pids) >= 4  # nspawn, systemd, journald, dbus, sshd...
    machine.poweroff()
    assert not machine.running
    assert _alive(pids) == []
    assert not Path(f"/run/systemd/nspawn/propagate/{machine.name}").exists()


def test_a_rebooted_machine_keeps_its_id_and_files(machine: Machine) -> None:
    machine.put_file("/etc/fleet/fleet.conf", "metadata=role=web\n")
    assert machine.run(["cat", "/etc/fleet/fleet.conf"], check=True).stdout == "metadata=role=web\n"
    machine.poweroff()
    machine.put_file("/etc/systemd/system/probe.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    machine.boot()
    assert machine.run(["cat", "/etc/machine-id"], check=True).stdout.strip() == machine.machine_id
    assert machine.run(["cat", "/etc/fleet/fleet.conf"], check=True).stdout == "metadata=role=web\n"
    machine.run(["systemctl", "start", "probe.service"], check=True)
    assert machine.run(["systemctl", "is-active", "probe.service"]).stdout.strip() == "active"
    login = subprocess.run(
        machine.ssh_command("true"), check=False, capture_output=True, text=True, timeout=30
    )
    assert login.returncode == 0, login.stderr


def test_kill_ends_every_process_of_the_machine(machine: Machine) -> None:
    machine.run(["systemd-run", "--unit=busy", "/bin/sleep", "infinity"], check=True)
    pids = _snapshot(machine)
    machine.kill()
    assert _alive(pids) == []


def test_leftovers_of_a_vanished_owner_are_stopped_by_recorded_pid(machine_state_dir: Path) -> None:
    state_dir = machine_state_dir / "leftovers"
    (orphan,) = boot_machines(1, state_dir, prefix="orphan")
    try:
        pids = _snapshot(orphan)
        workdir = orphan.workdir
        assert stop_leftovers(state_dir) == [orphan.name]
        assert _alive(pids) == []
        assert not workdir.exists()
    finally:
        orphan.destroy()  # after stop_leftovers: nothing left to do, and it must not fail


def test_cluster_machines_are_distinct_and_reachable(cluster: Cluster) -> None:
    ids = {m.machine_id for m in cluster.machines}
    addresses = {m.address for m in cluster.machines}
    assert len(ids) == len(addresses) == len(cluster.machines) == 3
    for m in cluster.machines:
        argv = m.ssh_command("cat", "/etc/machine-id", key=client_key(cluster.state_dir))
        argv[argv.index(f"UserKnownHostsFile={m.known_hosts}")] = f"UserKnownHostsFile={cluster.known_hosts}"
        login = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
        assert login.stdout.strip() == m.machine_id, login.stderr
