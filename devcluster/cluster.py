"""The local cluster: etcd on loopback (one member, or a raft cluster of several with ``etcd_members``) and
N real systemd machines (nspawn), each running fleetd, which is given every member's endpoint.

Every machine gets its own machine ID, loopback address 127.0.0.N, sshd and metadata (``role=web`` on all
but one or two, ``role=db`` on the last, ``role=pods`` on the one before it when there are four or more,
``hostname=<machine name>``). Its ``/etc/fleet/fleet.conf`` and
``/etc/systemd/system/fleetd.service`` are the ``write_files`` of ``deploy/cloud-config/worker.yaml``
rendered with the cluster's values, so the demo runs exactly what cloud-init installs on a real node.
The checkout's venv is bound read-only at ``/opt/fleet`` inside each machine, so the unit's
``ExecStart=/opt/fleet/bin/fleetd`` runs unchanged (the venv's scripts name the checkout's interpreter by
absolute path, and the checkout is bound at the same path).

Everything is recorded under ``/run/fleet-devcluster/<cluster>/`` (``cluster.json``: etcd's PID and the
machines); ``down`` stops it all by recorded PID from any process and removes the directory, leaving no
process or mount behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from devcluster.cloudconfig import WrittenFile, render, written_files
from devcluster.etcd import EtcdCluster, EtcdServer
from devcluster.nspawn import CHECKOUT, Bind, Machine, boot_machines, client_key, stop_leftovers
from devcluster.nspawn import write_known_hosts as _write_known_hosts

__all__ = [
    "FLEETCTL",
    "STATE_ROOT",
    "ClusterError",
    "ClusterState",
    "MachineRecord",
    "bring_down",
    "bring_up",
    "fleetctl",
    "healthy",
    "load_state",
    "machine_files",
    "machine_roles",
    "running_pids",
    "state_dir_of",
    "wait_for_machines",
]

STATE_ROOT = Path("/run/fleet-devcluster")
FLEET_VENV = "/opt/fleet"
FLEETCTL = CHECKOUT / ".venv" / "bin" / "fleetctl"
PREFERRED_ETCD_PORT = 2379
_FLEET_CONF = "/etc/fleet/fleet.conf"
_FLEETD_UNIT = "/etc/systemd/system/fleetd.service"

Printer = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not be brought up, inspected or torn down."""


@dataclass(frozen=True, slots=True)
class MachineRecord:
    name: str
    address: str
    machine_id: str
    metadata: str
    nspawn_pid: int
    leader_pid: int


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What ``up`` recorded in ``<state_dir>/cluster.json``."""

    name: str
    state_dir: Path
    endpoint: str
    etcd_pid: int  # the first etcd member
    etcd_start: int
    machines: tuple[MachineRecord, ...]
    etcd_peers: tuple[tuple[int, int], ...] = ()  # (PID, start time) of the other members, if any

    @property
    def etcd_processes(self) -> tuple[tuple[int, int], ...]:
        """(PID, start time) of every etcd member."""
        return ((self.etcd_pid, self.etcd_start), *self.etcd_peers)

    @property
    def key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        data = json.loads(text)
        return cls(
            name=data["name"],
            state_dir=Path(data["state_dir"]),
            endpoint=data["endpoint"],
            etcd_pid=data["etcd_pid"],
            etcd_start=data["etcd_start"],
            machines=tuple(MachineRecord(**m) for m in data["machines"]),
            etcd_peers=tuple((int(pid), int(start)) for pid, start in data.get("etcd_peers", ())),
        )


def state_dir_of(name: str, root: Path = STATE_ROOT) -> Path:
    if not name or "/" in name or name in ("addresses", ".", ".."):
        raise ClusterError(f"invalid cluster name {name!r}")
    return root / name


def machine_roles(count: int) -> list[str]:
    """``role=`` of machines 1..count: the last of two or more is ``db``, the one before it ``pods`` when
    there are four or more (the demo's pods machine), the others ``web``."""
    roles = ["db" if count > 1 and index == count else "web" for index in range(1, count + 1)]
    if count >= 4:
        roles[-2] = "pods"
    return roles


def machine_files(endpoint: str, metadata: str, public_ip: str) -> dict[str, WrittenFile]:
    """fleet.conf and fleetd.service for one machine: worker.yaml's write_files (content and permissions)
    with the cluster's values."""
    rendered = render(
        "worker.yaml",
        {"ETCD_SERVERS": endpoint, "METADATA": metadata, "FLEET_PACKAGE": f"{FLEET_VENV} (bound)"},
    )
    files = written_files(rendered)
    conf = files[_FLEET_CONF]
    # worker.yaml leaves public_ip to detection (every machine here shares the host's route): set it.
    text = conf.content.rstrip("\n") + f'\npublic_ip="{public_ip}"\n'
    return {_FLEET_CONF: replace(conf, content=text), _FLEETD_UNIT: files[_FLEETD_UNIT]}


# -- processes ---------------------------------------------------------------------------------------------


def _start_time(pid: int) -> int:
    """The kernel start time of ``pid`` (0 when it is gone), to tell it from a later process with its PID."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return 0 if fields[0] == "Z" else int(fields[19])


def _alive(pid: int, start: int) -> bool:
    return pid > 0 and start != 0 and _start_time(pid) == start


def running_pids(state: ClusterState) -> list[int]:
    """The recorded PIDs (etcd, every nspawn and machine PID 1) that still run the recorded process."""
    pids = list(state.etcd_processes)
    for m in state.machines:
        record = state.state_dir / "machines" / m.name / "pids.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            for entry in json.loads(record.read_text())["pids"].values():
                pids.append((entry["pid"], entry["start"] or 0))
    return [pid for pid, start in pids if _alive(pid, start)]


def _kill(pid: int, start: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; waits until the process is gone."""
    if not _alive(pid, start):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, start):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time (a lock on the state root directory itself: no lock file is left)."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- fleetctl ----------------------------------------------------------------------------------------------


def fleetctl(
    endpoint: str,
    *args: str,
    timeout: float = 120.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the checkout's ``fleetctl --endpoint ENDPOINT ARGS`` (not checked), with ``env`` added to the
    environment."""
    return subprocess.run(
        [str(FLEETCTL), "--endpoint", endpoint, *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, **env} if env is not None else None,
    )


def machines_listed(endpoint: str) -> list[str]:
    """The rows of ``fleetctl list-machines --full --no-legend`` (empty when it fails)."""
    result = fleetctl(endpoint, "list-machines", "--full", "--no-legend", timeout=30)
    if result.returncode != 0:
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]


def wait_for_machines(endpoint: str, machine_ids: Sequence[str], timeout: float = 60.0) -> list[str]:
    """Poll ``list-machines`` until every ID in ``machine_ids`` is listed; returns the rows."""
    deadline = time.monotonic() + timeout
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = machines_listed(endpoint)
        if all(any(row.split()[0] == mid for row in rows) for mid in machine_ids):
            return rows
        time.sleep(0.5)
    shown = f"{len(rows)} of {len(machine_ids)}"
    raise ClusterError(f"fleetctl list-machines shows {shown} machines after {timeout}s")


# -- up / down ---------------------------------------------------------------------------------------------


def load_state(name: str, root: Path = STATE_ROOT) -> ClusterState | None:
    path = state_dir_of(name, root) / "cluster.json"
    try:
        return ClusterState.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None


def healthy(state: ClusterState) -> bool:
    """etcd and every machine's nspawn and PID 1 are still the recorded processes."""
    return len(running_pids(state)) == len(state.etcd_processes) + 2 * len(state.machines)


def bring_up(
    name: str = "fleet",
    machines: int = 3,
    *,
    root: Path = STATE_ROOT,
    log: Printer = print,
    join_timeout: float = 60.0,
    etcd_members: int = 1,
) -> tuple[ClusterState, bool]:
    """Start the cluster ``name``; returns (state, created). A healthy existing one is returned as
    is; a broken one is torn down and recreated."""
    if machines < 1:
        raise ClusterError("a cluster needs at least one machine")
    if etcd_members < 1:
        raise ClusterError("etcd needs at least one member")
    state_dir = state_dir_of(name, root)
    with _locked(state_dir):
        existing = load_state(name, root)
        if existing is not None and healthy(existing):
            return existing, False
        if state_dir.exists():
            log(f"== cluster {name}: removing the remains of an earlier run")
            _tear_down(state_dir)
        return _create(name, machines, state_dir, log, join_timeout, etcd_members=etcd_members), True


def _start_etcd(state_dir: Path, members: int) -> tuple[str, tuple[tuple[int, int], ...]]:
    """One etcd member (on 2379 when free) or a cluster of ``members``; (endpoints, (PID, start) each)."""
    etcd: EtcdServer | EtcdCluster
    if members == 1:
        etcd = EtcdServer(host="127.0.0.1", data_dir=state_dir / "etcd")
        if _port_free("127.0.0.1", PREFERRED_ETCD_PORT):
            etcd.client_port = PREFERRED_ETCD_PORT
        servers: tuple[EtcdServer, ...] = (etcd,)
    else:
        etcd = EtcdCluster(members, host="127.0.0.1", data_dir=state_dir / "etcd")
        servers = etcd.members
    try:
        etcd.start()
    except BaseException:
        etcd.stop()
        raise
    pids = tuple((s.pid, _start_time(s.pid)) for s in servers if s.pid is not None)
    return etcd.endpoint, pids


def _create(
    name: str, count: int, state_dir: Path, log: Printer, join_timeout: float, *, etcd_members: int = 1
) -> ClusterState:
    state_dir.mkdir(parents=True)
    try:
        endpoint, etcd_pids = _start_etcd(state_dir, etcd_members)
        (first_pid, first_start), *peers = etcd_pids
        state = ClusterState(name, state_dir, endpoint, first_pid, first_start, (), tuple(peers))
        (state_dir / "cluster.json").write_text(state.to_json())
        log(f"== etcd: {endpoint} (PID {', '.join(str(pid) for pid, _ in etcd_pids)})")
        venv = Bind(CHECKOUT / ".venv", FLEET_VENV)
        log(f"== booting {count} systemd-nspawn machine(s)")
        booted = boot_machines(count, state_dir, prefix=name, binds=(venv,))
        records = _start_fleetd(booted, endpoint, log)
        state = replace(state, machines=records)
        (state_dir / "cluster.json").write_text(state.to_json())
        _write_known_hosts(booted, state.known_hosts)
        client_key(state_dir)
        wait_for_machines(endpoint, [m.machine_id for m in booted], join_timeout)
        return state
    except BaseException:
        _tear_down(state_dir)
        raise


def start_fleetd(machine: Machine, timeout: float = 30.0) -> None:
    """``systemctl start fleetd`` in ``machine``. A first start that fails is left to the unit's
    ``Restart=always`` (as on a real node) for up to ``timeout`` seconds; then fleetd's last lines are
    raised."""
    started = machine.run(["systemctl", "start", "fleetd.service"], timeout=60)
    deadline = time.monotonic() + timeout
    while started.returncode != 0:
        if machine.run(["systemctl", "is-active", "--quiet", "fleetd.service"]).returncode == 0:
            return
        if time.monotonic() > deadline:
            journal = machine.run(["journalctl", "-u", "fleetd", "-n", "20", "-o", "cat", "--no-pager"])
            tail = " | ".join(line for line in journal.stdout.splitlines() if line.strip())
            raise ClusterError(f"machine {machine.name}: fleetd.service did not start: {tail}")
        time.sleep(0.25)


def _start_fleetd(booted: Sequence[Machine], endpoint: str, log: Printer) -> tuple[MachineRecord, ...]:
    records = []
    for machine, role in zip(booted, machine_roles(len(booted)), strict=True):
        metadata = f"role={role},hostname={machine.name}"
        for path, file in machine_files(endpoint, metadata, machine.address).items():
            machine.put_file(path, file.content, file.permissions)
        machine.run(["systemctl", "daemon-reload"], check=True)
        start_fleetd(machine)
        assert machine.pid is not None and machine.leader is not None
        log(f"   {machine.name}: {machine.address} id {machine.machine_id[:8]}... {metadata}")
        records.append(
            MachineRecord(
                machine.name, machine.address, machine.machine_id, metadata, machine.pid, machine.leader
            )
        )
    return tuple(records)


def bring_down(name: str = "fleet", root: Path = STATE_ROOT) -> bool:
    """Stop everything of cluster ``name`` by recorded PID and remove its state; False if there was none."""
    state_dir = state_dir_of(name, root)
    with _locked(state_dir):
        if not state_dir.exists():
            return False
        _tear_down(state_dir)
        return True


def _tear_down(state_dir: Path) -> None:
    stop_leftovers(state_dir)
    state = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = ClusterState.from_json((state_dir / "cluster.json").read_text())
    if state is not None:
        for pid, start in state.etcd_processes:
            _kill(pid, start)
    leftover = _mounts_under(state_dir)
    if leftover:
        raise ClusterError(f"still mounted under {state_dir}: {', '.join(leftover)}")
    shutil.rmtree(state_dir, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found
