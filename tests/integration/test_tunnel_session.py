"""The reusable tunnel on real parts: fleetctl processes through a real sshd (behind a proxy that counts its
TCP connections) to a real etcd. The first command leaves a session; the next one opens no SSH connection;
the session ends after its idle time; ``--tunnel-reuse=false`` connects every time."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.etcd import EtcdServer
from devcluster.sshd import SshServer

FLEETCTL = [sys.executable, "-c", "from fleetctl.cli import main; main()"]


class CountingProxy:
    """TCP on 127.0.0.1:<port> relayed to ``target``; counts the connections accepted."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[CountingProxy]:
    counting = CountingProxy((sshd.host, sshd.port))
    yield counting
    counting.close()


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fc-run-") as name:  # unix socket paths are short
        yield Path(name)


def _fleetctl(
    etcd: EtcdServer, proxy: CountingProxy, runtime: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "FLEETCTL_ENDPOINT": etcd.endpoint,
        "FLEETCTL_TUNNEL": f"127.0.0.1:{proxy.port}",
        "FLEETCTL_KNOWN_HOSTS_FILE": str(tmp_path / "known_hosts"),
        "FLEETCTL_STRICT_HOST_KEY_CHECKING": "false",
        "FLEETCTL_SSH_USERNAME": "root",
    }
    return subprocess.run(
        [*FLEETCTL, "list-machines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


def _sockets(runtime: Path) -> list[Path]:
    return sorted((runtime / "fleetctl").glob("*.sock")) if (runtime / "fleetctl").exists() else []


def _wait_for(predicate: object, seconds: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_the_second_command_reuses_the_session_and_the_session_ends_when_idle(
    tmp_path: Path, sshd: SshServer, proxy: CountingProxy, runtime_dir: Path, etcd_server: EtcdServer
) -> None:
    first = _fleetctl(etcd_server, proxy, runtime_dir, tmp_path, "--tunnel-idle", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("MACHINE")
    assert proxy.accepted == 1
    (control,) = _sockets(runtime_dir)
    assert oct(control.stat().st_mode & 0o777) == "0o600"
    assert oct((runtime_dir / "fleetctl").stat().st_mode & 0o777) == "0o700"

    second = _fleetctl(etcd_server, proxy, runtime_dir, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert proxy.accepted == 1  # no new SSH connection

    assert _wait_for(lambda: not _sockets(runtime_dir), 15), "the idle session did not end"
    third = _fleetctl(etcd_server, proxy, runtime_dir, tmp_path, "--tunnel-idle", "1")
    assert third.returncode == 0, third.stderr
    assert proxy.accepted == 2  # a new session
    assert _wait_for(lambda: not _sockets(runtime_dir), 15)


def test_without_reuse_every_command_connects_and_leaves_nothing(
    tmp_path: Path, sshd: SshServer, proxy: CountingProxy, runtime_dir: Path, etcd_server: EtcdServer
) -> None:
    for expected in (1, 2):
        result = _fleetctl(etcd_server, proxy, runtime_dir, tmp_path, "--tunnel-reuse=false")
        assert result.returncode == 0, result.stderr
        assert proxy.accepted == expected
    assert _sockets(runtime_dir) == []
