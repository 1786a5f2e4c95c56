"""A real OpenSSH sshd and ssh-agent for tests and benchmarks, on loopback, stopped by PID.

    with SshAgent(tmp) as agent, SshServer(tmp / "a", authorized=[agent.public_key]) as sshd:
        env SSH_AUTH_SOCK=agent.socket; ssh -p sshd.port root@sshd.host

``SshServer.replace_host_key()`` restarts sshd with a fresh host key (a "replaced machine" for known_hosts
tests).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from devcluster.etcd import free_port

__all__ = ["SshAgent", "SshServer", "make_key"]

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


def make_key(path: Path, key_type: str = "ed25519") -> Path:
    """Generate an unencrypted key pair at ``path`` (+ ``.pub``); returns ``path``."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "fleet-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SshServer:
    """One sshd in the foreground on ``host``:random port, with its own host key and authorized_keys."""

    def __init__(self, directory: Path, authorized: list[str], *, host: str = "127.0.0.1") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host)
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.config = self.dir / "sshd_config"
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text("".join(key.strip() + "\n" for key in authorized))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "sshd.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def host_public_key(self) -> str:
        """The host's public key as ``type base64``."""
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    def _write_config(self) -> None:
        self.config.write_text(
            f"ListenAddress {self.host}:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding yes\n"
            "AllowAgentForwarding yes\nPrintMotd no\nLogLevel ERROR\n"
        )

    def start(self, timeout: float = 10.0) -> SshServer:
        if self._proc is not None:
            return self
        if not self.host_key.exists():
            make_key(self.host_key)
        self._write_config()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        _wait_for_port(self.host, self.port, self._proc, time.monotonic() + timeout)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop(proc)

    def replace_host_key(self) -> None:
        """Restart with a new host key on the same address and port."""
        self.stop()
        make_key(self.host_key)
        self.start()

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SshAgent:
    """A real ssh-agent in the foreground (``-D``) on a socket in ``directory``, holding one generated key."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "agent.sock")
        self.key = self.dir / "id_agent"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def public_key(self) -> str:
        return Path(f"{self.key}.pub").read_text().strip()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> SshAgent:
        make_key(self.key)
        self._proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", self.socket],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError("ssh-agent did not create its socket")
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": self.socket}
        subprocess.run(["ssh-add", "-q", str(self.key)], check=True, env=env, stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> SshAgent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
