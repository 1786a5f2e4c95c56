"""spec §8.2 TestKnownHostsVerification, TestTunnelScheduleBatchUnits, TestUnitSSHActions, and
``journal -f`` streaming, through the real fleetctl against the machines' real sshd and journald."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import FLEETCTL
from devcluster.nspawn import OPERATOR, Machine
from devcluster.sshd import SshAgent, make_key
from tests.integration.e2e.harness import FIXTURES, FleetCluster
from tests.integration.e2e.waits import wait_for_active


def _write_in_place(path: Path, data: bytes) -> None:
    """Rewrite a file bound into a machine without changing its inode (the bind keeps the inode)."""
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()


@pytest.fixture
def replaceable_host_key(fleet: FleetCluster, tmp_path: Path) -> Iterator[tuple[Machine, Path]]:
    """A machine whose sshd host key the test may replace; the original key is put back afterwards."""
    machine = fleet.machines[1]
    key = machine.workdir / "ssh" / "host_key"
    saved = (key.read_bytes(), Path(f"{key}.pub").read_bytes())
    fresh = make_key(tmp_path / "new_host_key")
    try:
        yield machine, fresh
    finally:
        _write_in_place(key, saved[0])
        _write_in_place(Path(f"{key}.pub"), saved[1])
        machine.run(["systemctl", "restart", "ssh.service"], check=True)


def test_known_hosts_verification(
    fleet: FleetCluster, tmp_path: Path, replaceable_host_key: tuple[Machine, Path]
) -> None:
    machine, fresh = replaceable_host_key
    known = tmp_path / "known_hosts"
    flags = ("--known-hosts-file", str(known), "ssh", machine.machine_id, "uptime")
    code, out, err = fleet.fleetctl(*flags, answer="yes")
    assert code == 0, err
    assert "load average" in out
    assert machine.address in known.read_text()
    # the machine is "replaced": a new host key on the same address
    key = machine.workdir / "ssh" / "host_key"
    _write_in_place(key, fresh.read_bytes())
    _write_in_place(Path(f"{key}.pub"), Path(f"{fresh}.pub").read_bytes())
    machine.run(["systemctl", "restart", "ssh.service"], check=True)
    code, out, err = fleet.fleetctl(*flags, answer="yes")
    assert code != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in err
    assert "load average" not in out
    known.write_text("")
    code, out, err = fleet.fleetctl(*flags, answer="yes")
    assert code == 0, err
    assert "load average" in out


def test_unknown_host_without_a_terminal_fails_clearly(fleet: FleetCluster, tmp_path: Path) -> None:
    machine = fleet.machines[0]
    code, _, err = fleet.fleetctl(
        "--known-hosts-file", str(tmp_path / "none"), "ssh", machine.machine_id, "true"
    )
    assert code != 0
    assert "no terminal" in err and len(err.strip().splitlines()) == 1


def test_tunnel_schedule_batch_units(fleet: FleetCluster, tmp_path: Path) -> None:
    known = str(tmp_path / "known_hosts")
    tunnel = ("--tunnel", fleet.machines[0].address, "--known-hosts-file", known)
    code, out, err = fleet.fleetctl(*tunnel, "start", "hello.service", answer="yes")
    assert code == 0, err
    assert "Unit hello.service launched on " in out
    names = [f"hello@{n}.service" for n in range(1, 11)]
    code, out, err = fleet.fleetctl(*tunnel, "start", *names)
    assert code == 0, err
    assert "Error" not in err
    assert out.count(" launched on ") == 10
    assert len(wait_for_active(fleet, 11)) == 11


def test_unit_ssh_actions(fleet: FleetCluster) -> None:
    fleet.ok("start", "--no-block", "hello.service")
    (machine_id,) = wait_for_active(fleet, 1)["hello.service"]
    assert fleet.ok("ssh", "hello.service", "echo", "foo") == "foo\n"
    assert fleet.ok("ssh", "--unit", "hello.service", "cat", "/etc/machine-id").strip() == machine_id
    assert "Active: active" in fleet.ok("status", "hello.service")
    assert "Hello, World!" in fleet.ok("journal", "hello.service")
    # an operator account that is not in the journal's group sees the unit's lines only through sudo
    operator = ("--ssh-username", OPERATOR)
    code, out, err = fleet.fleetctl(*operator, "journal", "hello.service")
    assert "Hello, World!" not in out, (code, out, err)
    assert "Hello, World!" in fleet.ok(*operator, "journal", "--sudo", "hello.service")
    code, _, _ = fleet.fleetctl("ssh", "hello.service", "exit", "7")
    assert code == 7
    # the same through the tunnel: a hop from the first machine, both host keys checked
    tunnel = ("--tunnel", fleet.machines[0].address)
    assert "Active: active" in fleet.ok(*tunnel, "status", "hello.service")
    assert fleet.ok(*tunnel, "ssh", "hello.service", "echo", "via") == "via\n"


def test_ssh_agent_keys_are_used(fleet: FleetCluster, tmp_path: Path) -> None:
    with SshAgent(tmp_path / "agent") as agent:
        env = {"SSH_AUTH_SOCK": agent.socket}
        subprocess.run(["ssh-add", "-q", str(fleet.key)], check=True, env={**os.environ, **env})
        machine = fleet.machines[2]
        code, out, err = fleet.fleetctl(
            "--known-hosts-file", str(fleet.known_hosts), "ssh", machine.machine_id, "hostname",
            ssh=False, env=env,
        )
    assert code == 0, err
    assert out.strip() == machine.name


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"{needle!r} not streamed; got {seen[-500:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.25))
        if ready:
            seen += os.read(proc.stdout.fileno(), 4096)
    return seen


def test_journal_follow_streams_new_lines(fleet: FleetCluster) -> None:
    fleet.ok("start", "say.service")
    (machine_id,) = wait_for_active(fleet, 1)["say.service"]
    machine = fleet.by_id(machine_id)
    argv = [str(FLEETCTL), "--endpoint", fleet.etcd.endpoint, *fleet.ssh_flags()]
    argv += ["journal", "-f", "say.service"]
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=FIXTURES,
        env=fleet.base_env,
    ) as proc:
        try:
            _read_until(proc, b"Started", 30)  # systemd's start message: the follow is running
            token = f"streamed-{uuid.uuid4().hex}"
            machine.run(["sh", "-c", f"echo {token} > /run/e2e-say"], check=True)
            _read_until(proc, token.encode(), 15)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
