"""The local cluster command (``python -m devcluster``), run as a user runs it: up, status, up again, down.

It boots real nspawn machines running fleetd against a real etcd; ``down`` must leave no process, mount,
address claim or state behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.addresses import CLAIMS_DIRECTORY
from devcluster.cloudconfig import render, written_files
from devcluster.cluster import (
    FLEETCTL,
    ClusterState,
    bring_down,
    fleetctl,
    load_state,
    machine_files,
    machine_roles,
    running_pids,
)
from devcluster.nspawn import CHECKOUT


def _devcluster(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devcluster", *args], cwd=CHECKOUT, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def _mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def _nspawn_commands_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"systemd-nspawn") and text.encode() in b" ".join(argv):
                found.append(entry.name)
    return found


@pytest.fixture
def cluster_name() -> Iterator[str]:
    name = f"dc{uuid.uuid4().hex[:4]}-"
    try:
        yield name
    finally:
        bring_down(name)  # also when a test fails half-way


def test_roles_and_files_come_from_worker_yaml() -> None:
    assert machine_roles(3) == ["web", "web", "db"]
    assert machine_roles(2) == ["web", "db"]
    assert machine_roles(1) == ["web"]
    assert machine_roles(4) == ["web", "web", "pods", "db"]
    files = machine_files("http://127.0.0.1:2379", "role=web,hostname=a", "127.0.0.10")
    shipped = written_files(render("worker.yaml", {
        "ETCD_SERVERS": "http://127.0.0.1:2379", "METADATA": "role=web,hostname=a", "FLEET_PACKAGE": "x",
    }))
    unit = "/etc/systemd/system/fleetd.service"
    assert files[unit].content == shipped[unit].content
    assert "ExecStart=/opt/fleet/bin/fleetd --config /etc/fleet/fleet.conf" in files[unit].content
    assert files["/etc/fleet/fleet.conf"].permissions == 0o600
    conf = files["/etc/fleet/fleet.conf"].content
    assert conf.startswith(shipped["/etc/fleet/fleet.conf"].content.rstrip("\n"))
    assert 'etcd_servers="http://127.0.0.1:2379"' in conf
    assert 'metadata="role=web,hostname=a"' in conf
    assert conf.endswith('public_ip="127.0.0.10"\n')


def test_up_status_up_again_and_down_leave_nothing(cluster_name: str) -> None:
    up = _devcluster("up", "--machines", "2", "--no-demo", "--name", cluster_name)
    assert up.returncode == 0, up.stdout + up.stderr
    state = load_state(cluster_name)
    assert state is not None
    assert up.stdout.count(state.endpoint) >= 2  # announced, and in the usage text
    assert "--tunnel" in up.stdout and "down" in up.stdout
    _check_running(state)

    status = _devcluster("status", "--name", cluster_name)
    assert status.returncode == 0, status.stdout + status.stderr
    for m in state.machines:
        assert m.name in status.stdout and m.machine_id in status.stdout
    _check_printed_environment(cluster_name, up.stdout, state)

    again = _devcluster("up", "--machines", "2", "--no-demo", "--name", cluster_name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already up" in again.stdout
    assert load_state(cluster_name) == state  # the same processes, nothing new started

    pids = running_pids(state)
    down = _devcluster("down", "--name", cluster_name)
    assert down.returncode == 0, down.stdout + down.stderr
    _check_gone(state, pids)
    assert _devcluster("status", "--name", cluster_name).returncode == 1
    assert "no cluster" in _devcluster("down", "--name", cluster_name).stdout


def test_a_broken_cluster_is_recreated(cluster_name: str) -> None:
    first = _devcluster("up", "--machines", "1", "--no-demo", "--name", cluster_name)
    assert first.returncode == 0, first.stdout + first.stderr
    state = load_state(cluster_name)
    assert state is not None
    old = running_pids(state)
    subprocess.run(["kill", "-KILL", str(state.etcd_pid)], check=True)  # etcd died under the cluster
    assert _devcluster("status", "--name", cluster_name).returncode == 1

    second = _devcluster("up", "--machines", "1", "--no-demo", "--name", cluster_name)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "remains of an earlier run" in second.stdout
    fresh = load_state(cluster_name)
    assert fresh is not None and fresh.etcd_pid != state.etcd_pid
    assert fresh.machines[0].machine_id != state.machines[0].machine_id
    assert not set(old) & set(running_pids(fresh))
    _check_running(fresh)


def _check_printed_environment(cluster_name: str, printed: str, state: ClusterState) -> None:
    """The usage text's `eval "$(scripts/demo env ...)"` line, run as printed in a shell, then fleetctl with
    no flags lists the machines and reaches one over SSH (known host, identity and user from the env)."""
    lines = [text.strip() for text in printed.splitlines()]
    line = next(text for text in lines if text.startswith('eval "$(scripts/demo'))
    assert f"--name {cluster_name}" in line
    machine = state.machines[0]
    script = f"{line} && {FLEETCTL} list-machines --no-legend --full"
    script += f" && {FLEETCTL} ssh {machine.machine_id} hostname"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCTL_")}
    done = subprocess.run(["bash", "-c", script], cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
                          check=False, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(m.machine_id in done.stdout for m in state.machines)
    assert done.stdout.strip().splitlines()[-1] == machine.name


def _check_running(state: ClusterState) -> None:
    assert len(running_pids(state)) == 1 + 2 * len(state.machines)
    ids = {m.machine_id for m in state.machines}
    addresses = {m.address for m in state.machines}
    assert len(ids) == len(addresses) == len(state.machines)
    roles = machine_roles(len(state.machines))
    listed = fleetctl(state.endpoint, "list-machines", "--full", "--no-legend")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert set(rows) == ids
    for m, role in zip(state.machines, roles, strict=True):
        assert m.metadata == f"role={role},hostname={m.name}"
        assert m.address in rows[m.machine_id]
        assert f"role={role}" in rows[m.machine_id] and f"hostname={m.name}" in rows[m.machine_id]
        inside = ["nsenter", "-t", str(m.leader_pid), "-m", "-u", "-i", "-p", "--"]
        active = subprocess.run([*inside, "systemctl", "is-active", "fleetd.service"],
                                capture_output=True, text=True, check=False, timeout=30)
        assert active.stdout.strip() == "active"
        conf = subprocess.run([*inside, "cat", "/etc/fleet/fleet.conf"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
        assert conf == machine_files(state.endpoint, m.metadata, m.address)["/etc/fleet/fleet.conf"].content


def _check_gone(state: ClusterState, pids: list[int]) -> None:
    assert pids  # there was something to stop
    assert running_pids(state) == []
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not state.state_dir.exists()
    assert [p.name for p in state.state_dir.parent.iterdir() if state.name in p.name] == []
    assert _mounts_mentioning(str(state.state_dir)) == []
    assert _nspawn_commands_mentioning(str(state.state_dir)) == []
    for m in state.machines:
        assert not (CLAIMS_DIRECTORY / m.address).exists()
        assert not Path(f"/run/systemd/nspawn/propagate/{m.name}").exists()
