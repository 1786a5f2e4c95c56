"""A command's side of the reusable tunnel (fleetctl.ssh.master): find the session for this tunnel host and
these SSH settings, or start one, and get ``unix:`` endpoints through it. No paramiko here, so a command
through a running session pays no SSH handshake and no paramiko import.

The session's control socket lives in ``$XDG_RUNTIME_DIR/fleetctl/`` (or ``~/.fleetctl/sessions/``), a
directory of this user with mode 0700 (refused otherwise); its name is a hash of everything that decides
how the host is reached and trusted (user, host, port, known hosts file, strictness, identity file), so
other settings get another session. Each reuse checks the host key the session holds against the known
hosts file again, with the same rules as a new connection. Whenever the session cannot be used (none can
start, the host is unknown and must be asked about on the terminal, the key no longer matches, the directory
is not private), ``shared_endpoints`` yields None and the command connects by itself, as without reuse.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from urllib.parse import urlsplit

from fleetctl.ssh.config import SSHSettings, split_host_port
from fleetctl.ssh.host_keys import HostKeyGate, Warn, warn_on_stderr
from fleetd.errors import TunnelError

__all__ = ["DEFAULT_IDLE_SECONDS", "session_dir", "session_path", "shared_endpoints"]

logger = logging.getLogger(__name__)

DEFAULT_IDLE_SECONDS = 60.0
DEFAULT_ETCD_PORT = 2379
_START_MARGIN = 5.0  # seconds allowed beyond the SSH timeout for a new session to start


def session_dir() -> str:
    """Where control sockets live: ``$XDG_RUNTIME_DIR/fleetctl`` when that is set, else
    ``~/.fleetctl/sessions``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "fleetctl")
    return os.path.expanduser("~/.fleetctl/sessions")


def _private_dir(path: str) -> bool:
    """Create ``path`` 0700 if missing; True when it is a directory of ours that nobody else can enter."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        logger.debug("no tunnel session directory %s: %s", path, exc)
        return False
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077
    if not private:
        logger.warning("not reusing SSH tunnels: %s is not a private directory of this user", path)
    return private


def session_path(tunnel: str, settings: SSHSettings, directory: str) -> str:
    """The control socket of the session for ``tunnel`` with ``settings``."""
    host, port = split_host_port(tunnel)
    identity = [
        settings.user,
        host,
        port,
        os.path.abspath(os.path.expanduser(settings.known_hosts_file)),
        settings.strict,
        os.path.abspath(os.path.expanduser(settings.identity_file)) if settings.identity_file else "",
        settings.use_agent,
        settings.use_default_keys,
    ]
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]
    return os.path.join(directory, f"tunnel-{digest}.sock")


def _targets(endpoints: Sequence[str]) -> list[str]:
    """``[host]:port`` of each etcd endpoint, as the session forwards it."""
    out = []
    for endpoint in endpoints:
        parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
        if parts.hostname is None:
            raise TunnelError(f"cannot tunnel endpoint {endpoint!r}: no host")
        out.append(f"[{parts.hostname}]:{parts.port or DEFAULT_ETCD_PORT}")
    return out


def _ask(sock: socket.socket, targets: Sequence[str], timeout: float) -> dict[str, object]:
    sock.settimeout(timeout)
    sock.sendall(json.dumps({"forward": list(targets)}).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the tunnel session closed the connection")
        data += chunk
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("bad reply")
    return reply


def _dial(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _start(tunnel: str, settings: SSHSettings, path: str, idle: float, warn: Warn) -> bool:
    """Start a session process for ``path``; True once it serves (its warnings are shown here)."""
    config = {"tunnel": tunnel, "settings": asdict(settings), "socket": path, "idle": idle}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetctl.ssh.master", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # not ended by the terminal's Ctrl-C meant for this command
        )
    except OSError as exc:
        logger.debug("cannot start a tunnel session: %s", exc)
        return False
    assert proc.stdout is not None
    try:
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(proc.stdout.fileno(), True)
        line = _read_line(proc, settings.timeout + _START_MARGIN)
    finally:
        proc.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)  # the session forks away at once: this reaps only its first process
    try:
        report = json.loads(line) if line else {}
    except ValueError:
        report = {}
    if not report.get("ready"):
        logger.debug("tunnel session did not start: %s", report.get("error", "no report"))
        return False
    for text in report.get("warnings", ()):
        warn(str(text))
    return True


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    import selectors  # noqa: PLC0415

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not data.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


def _trusted(reply: dict[str, object], settings: SSHSettings) -> bool:
    """The session's host key passes this command's host key rules, without asking anyone."""
    name, key = reply.get("host"), reply.get("host_key")
    if not isinstance(name, str) or not isinstance(key, list) or len(key) != 2:
        return False
    gate = HostKeyGate(name, settings.known_hosts_file, settings.strict, lambda _q: None, lambda _t: None)
    try:
        gate.check(str(key[0]), base64.b64decode(str(key[1])))
    except (TunnelError, ValueError) as exc:
        logger.debug("not reusing the tunnel session: %s", exc)
        return False
    return True


@contextlib.contextmanager
def shared_endpoints(
    tunnel: str,
    endpoints: Sequence[str],
    settings: SSHSettings,
    *,
    idle: float = DEFAULT_IDLE_SECONDS,
    directory: str | None = None,
    warn: Warn = warn_on_stderr,
) -> Iterator[tuple[str, ...] | None]:
    """``unix:`` endpoints reaching ``endpoints`` through the tunnel session (started when there is none),
    held for the ``with`` block; None when no session can be used. A forwarding failure reported by the
    session (an unreachable endpoint) raises its TunnelError."""
    where = directory or session_dir()
    if not _private_dir(where):
        yield None
        return
    path = session_path(tunnel, settings, where)
    targets = _targets(endpoints)
    sock = _dial(path)
    if sock is None:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a session that ended without removing its socket
        if _start(tunnel, settings, path, idle, warn):
            sock = _dial(path)
    if sock is None:
        yield None
        return
    with sock:
        try:
            reply = _ask(sock, targets, settings.timeout)
        except (OSError, ValueError) as exc:
            logger.debug("tunnel session unusable: %s", exc)
            reply = {}
        if "error" in reply:
            raise TunnelError(str(reply["error"]))
        forwarded = reply.get("endpoints")
        if not isinstance(forwarded, list) or len(forwarded) != len(targets) or not _trusted(reply, settings):
            yield None
            return
        yield tuple(str(endpoint) for endpoint in forwarded)
