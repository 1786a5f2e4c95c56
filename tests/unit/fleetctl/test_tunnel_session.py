"""The tunnel session's server (fleetctl.ssh.master.TunnelMaster) with a fake forwarder and a manual clock:
endpoints forwarded once and shared, idle shutdown only when no command is connected; and the client's
choice of socket directory and name."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.ssh.config import SSHSettings
from fleetctl.ssh.master import TunnelMaster, bind_private
from fleetctl.ssh.reuse import session_path, shared_endpoints
from fleetd.errors import TunnelError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fc-") as name:  # unix socket paths are short
        os.chmod(name, 0o700)
        yield Path(name)


ED25519_BLOB = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(range(32))


class Served:
    def __init__(self, directory: Path, *, fail: str = "") -> None:
        self.path = str(directory / "s.sock")
        self.forwarded: list[tuple[str, int]] = []
        self.clock = Clock()
        self.fail = fail
        self.master = TunnelMaster(
            bind_private(self.path),
            self._forward,
            host="[10.0.0.1]:22",
            host_key=("ssh-ed25519", ED25519_BLOB),
            idle=60.0,
            clock=self.clock,
            poll=0.01,
        )
        self.thread = threading.Thread(target=self.master.serve, daemon=True)
        self.thread.start()

    def _forward(self, host: str, port: int) -> str:
        if self.fail:
            raise TunnelError(self.fail)
        self.forwarded.append((host, port))
        return f"unix:/forward/{host}/{port}"

    def finish(self) -> None:
        """Let idle time pass until the session ends (it may still be dropping a closed client)."""
        for _ in range(100):
            self.clock.now += 1000.0
            self.thread.join(0.05)
            if not self.thread.is_alive():
                return
        raise AssertionError("the session did not end")

    def client(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        sock.settimeout(5)
        return sock


def _request(sock: socket.socket, targets: list[str]) -> dict[str, object]:
    sock.sendall(json.dumps({"forward": targets}).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(4096)
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


def test_endpoints_are_forwarded_once_and_shared_by_later_commands(short_dir: Path) -> None:
    served = Served(short_dir)
    with served.client() as first:
        reply = _request(first, ["[10.0.0.2]:2379", "[fd00::1]:2379"])
    with served.client() as second:
        again = _request(second, ["[10.0.0.2]:2379"])
    assert reply == {
        "endpoints": ["unix:/forward/10.0.0.2/2379", "unix:/forward/fd00::1/2379"],
        "host": "[10.0.0.1]:22",
        "host_key": ["ssh-ed25519", base64.b64encode(ED25519_BLOB).decode()],
    }
    assert again["endpoints"] == ["unix:/forward/10.0.0.2/2379"]
    assert served.forwarded == [("10.0.0.2", 2379), ("fd00::1", 2379)]
    assert stat.S_IMODE(os.stat(served.path).st_mode) == 0o600
    served.finish()


def test_the_session_ends_when_idle_but_not_while_a_command_is_connected(short_dir: Path) -> None:
    served = Served(short_dir)
    with served.client() as command:
        _request(command, ["[10.0.0.2]:2379"])
        served.clock.now = 120.0  # idle time passes while the command still runs
        served.thread.join(0.2)
        assert served.thread.is_alive()
    # the command ended: the idle time counts from now
    served.thread.join(0.2)
    assert served.thread.is_alive()
    served.clock.now = 120.0 + 59.0
    served.thread.join(0.2)
    assert served.thread.is_alive()
    served.clock.now = 120.0 + 61.0
    served.thread.join(5)
    assert not served.thread.is_alive()


def test_a_forwarding_failure_is_the_commands_error_and_bad_requests_are_refused(short_dir: Path) -> None:
    served = Served(short_dir, fail="host [10.0.0.9]:2379 unreachable from [10.0.0.1]:22: Connect failed")
    with served.client() as command:
        assert _request(command, ["[10.0.0.9]:2379"]) == {
            "error": "host [10.0.0.9]:2379 unreachable from [10.0.0.1]:22: Connect failed"
        }
        command.sendall(b"not json\n")
        assert b"bad tunnel session request" in command.recv(4096)
    served.finish()


def test_sessions_are_per_host_and_trust_settings() -> None:
    base = SSHSettings(user="core", known_hosts_file="/k")
    path = session_path("10.0.0.1:22", base, "/run/fleetctl")
    assert path.startswith("/run/fleetctl/tunnel-") and path.endswith(".sock")
    same = SSHSettings(user="core", known_hosts_file="/k")
    assert path == session_path("10.0.0.1:22", same, "/run/fleetctl")
    for other in (
        session_path("10.0.0.1:2222", base, "/run/fleetctl"),
        session_path("10.0.0.1:22", SSHSettings(user="root", known_hosts_file="/k"), "/run/fleetctl"),
        session_path("10.0.0.1:22", SSHSettings(user="core", known_hosts_file="/other"), "/run/fleetctl"),
        session_path("10.0.0.1:22", SSHSettings(user="core", known_hosts_file="/k", strict=False), "/run/x"),
    ):
        assert other != path


def test_a_directory_others_can_enter_is_not_used(short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    settings = SSHSettings(user="core", known_hosts_file=str(short_dir / "k"))
    with shared_endpoints("10.0.0.1:22", ["http://10.0.0.2:2379"], settings, directory=str(shared)) as got:
        assert got is None
    assert list(shared.iterdir()) == []


def test_a_running_session_is_used_only_when_its_host_key_is_on_file(short_dir: Path) -> None:
    settings = SSHSettings(user="core", known_hosts_file=str(short_dir / "known_hosts"))
    sessions = short_dir / "sessions"
    sessions.mkdir(mode=0o700)
    path = session_path("10.0.0.1:22", settings, str(sessions))
    served = Served(short_dir)
    os.replace(served.path, path)
    served.path = path
    with shared_endpoints("10.0.0.1:22", ["http://10.0.0.2:2379"], settings, directory=str(sessions)) as got:
        assert got is None  # the session's host is not in known_hosts: the command connects (and asks) itself
    key = base64.b64encode(ED25519_BLOB).decode()
    Path(settings.known_hosts_file).write_text(f"[10.0.0.1]:22 ssh-ed25519 {key}\n")
    with shared_endpoints("10.0.0.1:22", ["http://10.0.0.2:2379"], settings, directory=str(sessions)) as got:
        assert got == ("unix:/forward/10.0.0.2/2379",)
    served.finish()
