"""A real etcd for tests and the demo: Debian's /usr/bin/etcd on loopback ports and a tmp data dir.

    with EtcdServer() as etcd:
        kv = EtcdKV([etcd.endpoint], request_timeout=5)

``pause()``/``resume()`` freeze and thaw the process (SIGSTOP/SIGCONT) so clients see timeouts, and
``stop()`` + ``start()`` restart it on the same data dir and ports, for outage tests. Always stopped by PID.

``EtcdCluster(3)`` runs three such members on loopback with one ``--initial-cluster`` naming all of them;
``endpoints`` lists their client URLs (``endpoint`` joins them with commas, as fleet.conf's
``etcd_servers`` and fleetctl's ``--endpoint`` take them) and ``leader()`` names the raft leader as
``etcdctl endpoint status`` reports it. A member stopped and started again rejoins from its data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EtcdCluster", "EtcdServer", "end_process", "free_port"]

ETCD_BINARY = "/usr/bin/etcd"
ETCDCTL_BINARY = "/usr/bin/etcdctl"
PORTS_FROM = 20000  # test servers listen on ports from here to the ephemeral range


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now, chosen below the kernel's ephemeral range: outgoing
    connections take their local ports from that range, so a port chosen in it may be taken by one before
    the server that was to listen on it binds."""
    low = _ephemeral_low()
    candidates = random.sample(range(PORTS_FROM, low), min(64, low - PORTS_FROM)) if low > PORTS_FROM else []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # none free there: the kernel's choice
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (``ip_local_port_range``), 32768 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def end_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child by its PID: SIGTERM, then SIGKILL after ``timeout`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EtcdServer:
    """One single-member etcd on ``host`` (a 127.0.0.0/8 address)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        binary: str = ETCD_BINARY,
        data_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 20.0,
        name: str = "fleet-test",
    ) -> None:
        self.name = name
        self.initial_cluster = ""  # "name=peer-url,...": set by EtcdCluster; empty means this member alone
        self.host = host
        self.binary = binary
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="fleet-etcd-"))
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EtcdServer:
        if self._proc is not None:
            return self
        self.launch()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Start the process without waiting for it to be healthy (members of a new cluster wait together:
        none is healthy before a quorum runs)."""
        if self._proc is not None:
            return
        peer = self.peer_url
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.extra_args,
        ]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_healthy(self) -> None:
        """Poll /health until etcd answers healthy, failing after ``start_timeout`` seconds."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._proc.returncode}; log: {self._log}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as resp:
                    if b'"true"' in resp.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy within {self.start_timeout}s; log: {self._log}")
            time.sleep(0.05)

    def pause(self, timeout: float = 5.0) -> None:
        """Freeze etcd (SIGSTOP): connections stay open but nothing answers.

        kill() only queues the signal: a thread running on another core goes on until it next enters the
        kernel, and may still answer a request sent right after. So this returns once every thread of etcd
        is seen stopped (state ``T`` in ``/proc/PID/task/*/stat``)."""
        assert self._proc is not None, "etcd is not running"
        pid = self._proc.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd (PID {pid}) did not stop within {timeout}s of SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        assert self._proc is not None, "etcd is not running"
        os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd by PID (SIGTERM, then SIGKILL); the data dir stays for a restart."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may end between the poll and the signal
                os.kill(proc.pid, signal.SIGCONT)  # a paused etcd cannot handle SIGTERM
        end_process(proc, timeout)

    def kill(self) -> None:
        """SIGKILL by PID: no graceful leadership transfer, as when a member's host dies."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop etcd and remove its data dir (if this object made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._log.unlink(missing_ok=True)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class EtcdCluster:
    """``size`` etcd members on ``host``, one raft cluster; always stopped by PID."""

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        binary: str = ETCD_BINARY,
        data_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="fleet-etcd-cluster-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.members = tuple(
            EtcdServer(
                host=host, binary=binary, data_dir=self.data_dir / f"member{n}", extra_args=extra_args,
                start_timeout=start_timeout, name=f"fleet-member{n}",
            )
            for n in range(size)
        )
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.endpoint for m in self.members)

    @property
    def endpoint(self) -> str:
        """Every member's client URL, comma-separated (fleet.conf ``etcd_servers``, ``--endpoint``)."""
        return ",".join(self.endpoints)

    @property
    def pid(self) -> int | None:
        """None while a member is stopped (so ``start()`` is owed), else the first member's PID."""
        pids = [m.pid for m in self.members]
        return None if None in pids else pids[0]

    def start(self) -> EtcdCluster:
        """Start every stopped member, then wait until each is healthy."""
        stopped = [m for m in self.members if m.pid is None]
        try:
            for member in stopped:
                member.launch()
            for member in stopped:
                member.wait_healthy()
        except BaseException:
            for member in stopped:
                member.stop()
            raise
        return self

    def pause(self, timeout: float = 5.0) -> None:
        for member in self.members:
            member.pause(timeout)

    def resume(self) -> None:
        for member in self.members:
            if member.pid is not None:
                member.resume()

    def stop(self, timeout: float = 10.0) -> None:
        for member in self.members:
            member.stop(timeout)

    def member(self, endpoint: str) -> EtcdServer:
        for member in self.members:
            if member.endpoint == endpoint:
                return member
        raise KeyError(endpoint)

    def status(self, timeout: float = 5.0) -> list[dict[str, object]]:
        """``etcdctl endpoint status -w json`` over the running members (one entry per answering member)."""
        running = [m.endpoint for m in self.members if m.pid is not None]
        done = subprocess.run(
            [ETCDCTL_BINARY, "--endpoints", ",".join(running), "--command-timeout", f"{timeout:g}s",
             "endpoint", "status", "-w", "json"],
            capture_output=True, text=True, timeout=timeout + 5, check=False,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        try:
            entries = json.loads(done.stdout or "[]")
        except ValueError:
            return []
        return [e for e in entries if isinstance(e, dict)]

    def leader(self, timeout: float = 5.0) -> EtcdServer | None:
        """The member that is raft leader (its member ID equals the leader ID it reports), if one is."""
        for entry in self.status(timeout):
            status = entry.get("Status")
            if not isinstance(status, dict):
                continue
            header = status.get("header")
            member_id = header.get("member_id") if isinstance(header, dict) else None
            if member_id is not None and member_id == status.get("leader"):
                return self.member(str(entry.get("Endpoint")))
        return None

    def cleanup(self) -> None:
        """Stop every member and remove the data dirs (if this object made them)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (``T``)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        stats = [(tasks / tid / "stat").read_text() for tid in os.listdir(tasks)]
    except (FileNotFoundError, ProcessLookupError):  # a thread ended while we looked: look again
        return False
    return bool(stats) and all(stat.rsplit(")", 1)[1].split()[0] == "T" for stat in stats)
