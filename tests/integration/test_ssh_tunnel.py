"""The SSH tunnel on real parts: OpenSSH sshd on loopback, a real ssh-agent, real etcd via a forwarder."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import select
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

from devcluster.etcd import EtcdServer
from devcluster.sshd import SshAgent, SshServer, make_key
from fleetctl.ssh import remote, tunnel
from fleetd.errors import TunnelError
from fleetd.model import MachineID, MachineState


class Answers:
    """A scripted terminal: records each question and gives the next answer (None: no terminal)."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []
        self.warnings: list[str] = []

    def ask(self, question: str) -> str | None:
        self.questions.append(question)
        return self.answers.pop(0)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def _settings(tmp_path: Path, **overrides: object) -> tunnel.SSHSettings:
    values: dict[str, object] = {
        "user": "root",
        "known_hosts_file": str(tmp_path / "fleetctl" / "known_hosts"),
        "use_default_keys": False,
        "timeout": 5.0,
    }
    values.update(overrides)
    return tunnel.SSHSettings(**values)  # type: ignore[arg-type]


def _connect(server: SshServer, settings: tunnel.SSHSettings, answers: Answers) -> tunnel.SSHConnection:
    return tunnel.connect(server.host, server.port, settings, ask=answers.ask, warn=answers.warn)


def _run(connection: tunnel.SSHConnection, command: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = connection.run(command, stdout=out, stderr=err)
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_agent_auth_runs_commands_and_propagates_exit_codes(tmp_path: Path, sshd: SshServer) -> None:
    with _connect(sshd, _settings(tmp_path, strict=False), Answers()) as connection:
        assert _run(connection, "echo out; echo err >&2; exit 7") == (7, "out\n", "err\n")
        assert _run(connection, "true")[0] == 0


def test_known_hosts_accept_then_changed_key_fails_then_cleared_file_accepts(
    tmp_path: Path, sshd: SshServer
) -> None:
    settings = _settings(tmp_path)
    known_hosts = Path(settings.known_hosts_file)
    name = f"[{sshd.host}]:{sshd.port}"

    first = Answers("yes")
    with _connect(sshd, settings, first) as connection:
        assert _run(connection, "uptime")[0] == 0
    assert first.questions[0].startswith(f"The authenticity of host '{name}' can't be established.\n")
    assert first.warnings == [
        f"Warning: Permanently added '{name}' (ssh-ed25519) to the list of known hosts."
    ]
    assert known_hosts.read_text() == f"{name} {sshd.host_public_key()}\n"
    assert stat.S_IMODE(known_hosts.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o644

    again = Answers()  # a known host: nothing is asked
    with _connect(sshd, settings, again) as connection:
        assert _run(connection, "true")[0] == 0
    assert again.questions == []

    sshd.replace_host_key()
    changed = Answers()
    with pytest.raises(TunnelError, match=r"^host key mismatch for \[127\.0\.0\.1\]:\d+: ") as caught:
        _connect(sshd, settings, changed)
    assert "\n" not in str(caught.value)
    assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in changed.warnings[0]
    assert changed.questions == []

    known_hosts.write_text("")
    cleared = Answers("yes")
    with _connect(sshd, settings, cleared) as connection:
        assert _run(connection, "true")[0] == 0
    assert known_hosts.read_text() == f"{name} {sshd.host_public_key()}\n"


def test_unknown_host_without_terminal_or_refused_fails_clearly(tmp_path: Path, sshd: SshServer) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(TunnelError, match="there is no terminal to confirm it"):
        _connect(sshd, settings, Answers(None))
    refused = Answers("no")
    with pytest.raises(TunnelError, match="unauthorized host"):
        _connect(sshd, settings, refused)
    assert refused.warnings == ["Host key verification failed."]
    assert not Path(settings.known_hosts_file).exists()


def test_identity_file_without_agent_and_auth_failure(
    tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK")
    stranger = make_key(tmp_path / "stranger")
    with pytest.raises(TunnelError, match=r"^auth failed for root@\[127\.0\.0\.1\]:\d+: no key accepted"):
        _connect(sshd, _settings(tmp_path, strict=False, identity_file=str(stranger)), Answers())
    sshd.authorized_keys.write_text(Path(f"{stranger}.pub").read_text())
    with _connect(sshd, _settings(tmp_path, strict=False, identity_file=str(stranger)), Answers()) as conn:
        assert _run(conn, "exit 3")[0] == 3


def test_unreachable_and_timeout_are_one_line_errors(tmp_path: Path) -> None:
    settings = _settings(tmp_path, strict=False, timeout=0.5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(TunnelError, match=rf"^host \[127\.0\.0\.1\]:{port} unreachable: Connection refused$"):
        tunnel.connect("127.0.0.1", port, settings)
    with socket.socket() as silent:  # accepts TCP but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(TunnelError, match=r"^timed out while initiating SSH connection$"):
            tunnel.connect("127.0.0.1", silent.getsockname()[1], settings)


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_forwarder_carries_connections_and_cleans_up(tmp_path: Path, sshd: SshServer) -> None:
    server, thread = _echo_server()
    try:
        with _connect(sshd, _settings(tmp_path, strict=False), Answers()) as connection:
            forwarder = connection.forward("127.0.0.1", server.getsockname()[1])
            assert forwarder.endpoint == f"unix:{forwarder.path}"
            directory = Path(forwarder.path).parent
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            for payload in (b"hello", b"x" * 200_000):
                with socket.socket(socket.AF_UNIX) as client:
                    client.connect(forwarder.path)
                    client.sendall(payload)
                    client.shutdown(socket.SHUT_WR)
                    received = b""
                    while chunk := client.recv(65536):
                        received += chunk
                assert received == payload
        assert not directory.exists()  # closing the connection closed its forwarders
    finally:
        server.close()
        thread.join(5)


def test_forwarder_to_unreachable_endpoint_fails_at_once(tmp_path: Path, sshd: SshServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with (
        _connect(sshd, _settings(tmp_path, strict=False), Answers()) as connection,
        pytest.raises(TunnelError, match=rf"^host \[127\.0\.0\.1\]:{port} unreachable from "),
    ):
        connection.forward("127.0.0.1", port)


def test_etcd_through_the_tunnel(tmp_path: Path, sshd: SshServer, etcd_server: EtcdServer) -> None:
    from fleetd.registry.etcd import EtcdKV  # noqa: PLC0415 (gRPC only where it is used)

    key = f"/t/{uuid.uuid4().hex}/k"
    settings = _settings(tmp_path, strict=False)
    with tunnel.tunneled_endpoints(f"{sshd.host}:{sshd.port}", [etcd_server.endpoint], settings) as endpoints:
        (endpoint,) = endpoints
        assert endpoint.startswith("unix:")

        async def roundtrip() -> list[str | None]:
            kv = EtcdKV([endpoint], request_timeout=5.0)
            try:
                await kv.put(key, "through the tunnel")
                got = [(await kv.get(key)) for _ in range(20)]  # many calls, one forwarded connection
                await kv.delete(key)
                return [item.value if item else None for item in got]
            finally:
                await kv.close()

        assert asyncio.run(roundtrip()) == ["through the tunnel"] * 20
    assert not Path(endpoint.removeprefix("unix:")).exists()


def test_hop_through_a_bastion_checks_both_host_keys(
    tmp_path: Path, sshd: SshServer, agent: SshAgent
) -> None:
    with SshServer(tmp_path / "sshd-b", [agent.public_key]) as target:
        answers = Answers("yes", "yes")
        settings = _settings(tmp_path)
        out = tmp_path / "out"
        machine = MachineState(MachineID("b" * 32), public_ip=target.host)
        with (
            open(out, "wb") as sink,
            remote.SSHRunner(
                settings, f"{sshd.host}:{sshd.port}", stdout=sink, ask=answers.ask, warn=answers.warn
            ) as runner,
        ):
            assert runner.run(machine, ["sh", "-c", "echo $SSH_CONNECTION; exit 4"], target.port) == 4
        assert len(answers.questions) == 2
        assert f"[{sshd.host}]:{sshd.port}" in answers.questions[0]
        assert f"[{target.host}]:{target.port}" in answers.questions[1]
        assert out.read_text().split()[3] == str(target.port)  # the command ran on the target sshd
        lines = Path(settings.known_hosts_file).read_text().splitlines()
        assert lines == [
            f"[{sshd.host}]:{sshd.port} {sshd.host_public_key()}",
            f"[{target.host}]:{target.port} {target.host_public_key()}",
        ]
        target.replace_host_key()
        changed = Answers()
        with (
            remote.SSHRunner(
                settings, f"{sshd.host}:{sshd.port}", ask=changed.ask, warn=changed.warn
            ) as runner,
            pytest.raises(TunnelError, match=r"^host key mismatch for"),
        ):
            runner.run(machine, ["true"], target.port)


def test_injection_attempts_are_quoted_harmlessly(tmp_path: Path, sshd: SshServer) -> None:
    canary = tmp_path / "pwned"
    words = ["echo", f"x; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", "'quoted'", "a\nb"]
    out = tmp_path / "out"
    machine = MachineState(MachineID("c" * 32), public_ip=sshd.host)
    with open(out, "wb") as sink, remote.SSHRunner(_settings(tmp_path, strict=False), stdout=sink) as runner:
        assert runner.run(machine, words, sshd.port) == 0
        journal = remote.journal_command(f"a.service; touch {canary}", 10, "short", follow=True, sudo=True)
        assert runner.run(machine, ["echo", *journal], sshd.port) == 0
    assert out.read_text() == " ".join(words[1:]) + "\n" + " ".join(journal) + "\n"
    assert not canary.exists()


def test_local_machine_runs_without_ssh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    machine = MachineState(MachineID("d" * 32), public_ip="192.0.2.1")  # unroutable: SSH would fail
    with (
        open(out, "wb") as sink,
        remote.SSHRunner(_settings(tmp_path), local_id="d" * 32, stdout=sink) as runner,
    ):
        assert runner.run(machine, ["sh", "-c", "echo local; exit 5"], 22) == 5
    assert out.read_text() == "local\n"


class CuttableProxy:
    """A TCP relay to ``target`` whose connections can be cut, to drop a tunnel mid-command."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            client, _ = self.server.accept()
        except OSError:
            return
        upstream = socket.create_connection(self.target)
        self.sockets += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._relay, args=(src, dst), daemon=True).start()

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        for sock in self.sockets:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)


class _CutOnFirstWrite(io.BytesIO):
    def __init__(self, proxy: CuttableProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.getvalue():
            self.proxy.cut()
        return super().write(data)


def test_dropped_tunnel_mid_command_is_a_one_line_error(tmp_path: Path, sshd: SshServer) -> None:
    proxy = CuttableProxy((sshd.host, sshd.port))
    try:
        with tunnel.connect("127.0.0.1", proxy.port, _settings(tmp_path, strict=False)) as connection:
            with pytest.raises(
                TunnelError, match=r"^tunnel dropped mid-command: the connection to .* was lost$"
            ):
                connection.run("echo started; sleep 30", stdout=_CutOnFirstWrite(proxy), stderr=io.BytesIO())
            assert not connection.active
    finally:
        proxy.close()


def test_tunnel_host_parsing() -> None:
    assert tunnel.split_host_port("10.0.0.1") == ("10.0.0.1", 22)
    assert tunnel.split_host_port("10.0.0.1:2222") == ("10.0.0.1", 2222)
    assert tunnel.split_host_port("[::1]:2222") == ("::1", 2222)
    assert tunnel.split_host_port("::1") == ("::1", 22)
    with pytest.raises(TunnelError):
        tunnel.split_host_port("host:notaport")
    assert os.path.basename(tunnel.DEFAULT_KNOWN_HOSTS_FILE) == "known_hosts"


def test_agent_forwarding_only_when_asked(tmp_path: Path, sshd: SshServer, agent: SshAgent) -> None:
    with _connect(sshd, _settings(tmp_path, strict=False), Answers()) as connection:
        code, _, _ = _run(connection, "ssh-add -L")
        assert code == 2  # no agent on the remote side
        forwarded = io.BytesIO()
        assert connection.run("ssh-add -L", stdout=forwarded, stderr=io.BytesIO(), forward_agent=True) == 0
    assert forwarded.getvalue().decode().split()[:2] == agent.public_key.split()[:2]


_SHELL_SCRIPT = """
import sys
from fleetctl.ssh import tunnel
settings = tunnel.SSHSettings(user="root", strict=False, use_default_keys=False, timeout=5.0)
with tunnel.connect(sys.argv[1], int(sys.argv[2]), settings) as connection:
    code = connection.shell()
sys.exit(code)
"""


def test_interactive_shell_gets_a_pty_of_the_terminal_size(tmp_path: Path, sshd: SshServer) -> None:

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SHELL_SCRIPT, sshd.host, str(sshd.port)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    os.close(terminal)
    try:
        seen = b""
        sent = False
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    seen += os.read(controller, 4096)
                except OSError:
                    break
            if not sent and seen.rstrip().endswith((b"#", b"$")):  # the remote shell's prompt
                os.write(controller, b"echo T=$TERM; stty size; exit 3\n")
                sent = True
        assert proc.wait(10) == 3
        text = seen.decode(errors="replace")
        assert "T=xterm-256color" in text
        assert "33 111" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
