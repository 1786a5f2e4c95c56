"""SSH for fleetctl: connect, check host keys, authenticate, run commands, hop, forward (the only paramiko
importer).

``connect(host, port, settings)`` dials TCP (TCP_NODELAY and keep-alives on), completes the SSH handshake with
the host-key algorithms restricted to the types on file for that host, checks the host key against our own
known_hosts parser (fleetctl.ssh.known_hosts), and authenticates with the ssh-agent's keys, then
``--identity-file``, then the user's default keys. The ``SSHConnection`` it returns runs commands (remote exit
codes propagate), opens an interactive shell, hops to another machine (``direct-tcpip`` + a second,
host-key-checked handshake) and forwards a TCP endpoint as a private unix socket for gRPC. Every failure is a
one-line ``TunnelError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import urlsplit

import paramiko
from paramiko.agent import AgentRequestHandler

from fleetctl.ssh import known_hosts as kh
from fleetctl.ssh.config import DEFAULT_KNOWN_HOSTS_FILE, DEFAULT_SSH_PORT, SSHSettings, split_host_port
from fleetctl.ssh.forwarder import UnixForwarder
from fleetctl.ssh.host_keys import Ask, HostKeyGate, Warn, ask_on_terminal, warn_on_stderr
from fleetctl.ssh.session import pump_command, pump_interactive
from fleetd.errors import TunnelError

__all__ = [
    "DEFAULT_KNOWN_HOSTS_FILE",
    "DEFAULT_SSH_PORT",
    "Ask",
    "SSHConnection",
    "SSHSettings",
    "Warn",
    "ask_on_terminal",
    "connect",
    "split_host_port",
    "tunneled_endpoints",
    "warn_on_stderr",
]

logger = logging.getLogger(__name__)
# paramiko logs handshake failures with tracebacks at ERROR; we raise one-line TunnelErrors instead. A
# NullHandler keeps Python's last-resort handler from printing them when the CLI configured no logging (with
# --debug the CLI's root handler still receives them).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
TIMEOUT_MESSAGE = "timed out while initiating SSH connection"


class _QuickAckSocket(socket.socket):
    """A TCP socket that re-arms TCP_QUICKACK after every read (Linux).

    sshd leaves Nagle on for sessions without a PTY: after it sends a small packet (e.g. its post-auth
    hostkeys/debug messages) its next reply waits for our ACK, which the kernel delays by up to 40 ms when we
    have nothing to send. Acknowledging at once removes that stall from every first reply (measured: channel
    open after auth 45 ms -> 2 ms).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return data


_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # 0: not on this platform


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    try:
        plain = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise TunnelError(TIMEOUT_MESSAGE) from exc
    except OSError as exc:
        raise TunnelError(f"host {kh.host_string(host, port)} unreachable: {exc.strerror or exc}") from exc
    sock = plain
    if _TCP_QUICKACK:
        sock = _QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _load_key_file(path: str, explicit: bool) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError as exc:
        if explicit:
            raise TunnelError(f"identity file {path} not found") from exc
    except paramiko.PasswordRequiredException as exc:
        if explicit:
            raise TunnelError(f"identity file {path} is encrypted: load it into ssh-agent") from exc
        logger.debug("skipping encrypted key %s", path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        if explicit:
            raise TunnelError(f"cannot load identity file {path}: {exc}") from exc
        logger.warning("skipping unreadable key %s: %s", path, exc)
    return None


def _candidate_keys(
    settings: SSHSettings, agent: paramiko.Agent | None
) -> Iterator[tuple[str, paramiko.PKey]]:
    """Keys in the order they are offered: agent, --identity-file, default keys; each public key once."""
    offered: set[bytes] = set()
    sources: list[tuple[str, paramiko.PKey | None]] = []
    if agent is not None:
        sources.extend(("ssh-agent", key) for key in agent.get_keys())
    if settings.identity_file:
        path = os.path.expanduser(settings.identity_file)
        sources.append((path, _load_key_file(path, explicit=True)))
    if settings.use_default_keys:
        for default in DEFAULT_KEYS:
            path = os.path.expanduser(default)
            if os.path.exists(path):
                sources.append((path, _load_key_file(path, explicit=False)))
    for label, key in sources:
        if key is not None and key.asbytes() not in offered:
            offered.add(key.asbytes())
            yield label, key


def _authenticate(transport: paramiko.Transport, name: str, settings: SSHSettings) -> None:
    agent = paramiko.Agent() if settings.use_agent and os.environ.get("SSH_AUTH_SOCK") else None
    tried: list[str] = []
    try:
        for label, key in _candidate_keys(settings, agent):
            tried.append(label)
            try:
                transport.auth_publickey(settings.user, key)
            except paramiko.BadAuthenticationType as exc:
                raise TunnelError(
                    f"auth failed for {settings.user}@{name}: server refuses public keys"
                ) from exc
            except paramiko.AuthenticationException:
                continue
            except paramiko.SSHException as exc:
                raise TunnelError(f"auth failed for {settings.user}@{name}: {exc}") from exc
            if transport.is_authenticated():
                return
    finally:
        if agent is not None:
            agent.close()
    what = ", ".join(dict.fromkeys(tried)) if tried else "no keys found (ssh-agent, --identity-file, ~/.ssh)"
    raise TunnelError(f"auth failed for {settings.user}@{name}: no key accepted (tried {what})")


def _is_timeout(exc: BaseException) -> bool:
    """paramiko reports timeouts as TimeoutError, as "... timed out", or as a banner error caused by one."""
    return (
        isinstance(exc, TimeoutError)
        or "timed out" in str(exc).lower()
        or isinstance(exc.__cause__ or exc.__context__, TimeoutError)
    )


def _start_client(transport: paramiko.Transport, timeout: float) -> None:
    """Key exchange within ``timeout`` (paramiko's own timeout returns silently with no session)."""
    done = threading.Event()
    transport.start_client(event=done)
    if not done.wait(timeout):
        raise TimeoutError("key exchange timed out")
    if not transport.is_active():
        raise transport.get_exception() or paramiko.SSHException("negotiation failed")


def _handshake(
    sock: socket.socket | paramiko.Channel,
    host: str,
    port: int,
    settings: SSHSettings,
    *,
    ask: Ask,
    warn: Warn,
) -> paramiko.Transport:
    gate = HostKeyGate(kh.host_string(host, port), settings.known_hosts_file, settings.strict, ask, warn)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = settings.timeout
    transport.handshake_timeout = settings.timeout
    transport.auth_timeout = settings.timeout
    options = transport.get_security_options()
    options.key_types = gate.allowed_algorithms(tuple(options.key_types))
    try:
        try:
            _start_client(transport, settings.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _is_timeout(exc):
                raise TunnelError(TIMEOUT_MESSAGE) from exc
            if "no acceptable host key" in str(exc):
                raise TunnelError(
                    f"host key mismatch for {gate.name}: it offers none of the key types in {gate.path}"
                ) from exc
            raise TunnelError(f"SSH handshake with {gate.name} failed: {exc or type(exc).__name__}") from exc
        server_key = transport.get_remote_server_key()
        gate.check(server_key.get_name(), server_key.asbytes())
        _authenticate(transport, gate.name, settings)
    except BaseException:
        transport.close()
        raise
    transport.set_keepalive(settings.keepalive)
    return transport


def connect(
    host: str,
    port: int,
    settings: SSHSettings,
    *,
    ask: Ask = ask_on_terminal,
    warn: Warn = warn_on_stderr,
) -> SSHConnection:
    """Open an authenticated, host-key-checked SSH connection to ``host:port``."""
    sock = _dial(host, port, settings.timeout)
    try:
        transport = _handshake(sock, host, port, settings, ask=ask, warn=warn)
    except BaseException:
        sock.close()
        raise
    return SSHConnection(transport, kh.host_string(host, port), settings, ask, warn)


@contextlib.contextmanager
def tunneled_endpoints(
    tunnel_host: str,
    endpoints: Sequence[str],
    settings: SSHSettings,
    *,
    ask: Ask = ask_on_terminal,
    warn: Warn = warn_on_stderr,
) -> Iterator[tuple[str, ...]]:
    """``--tunnel``: one SSH connection to ``host[:port]``.

    Yields a ``unix:`` endpoint per etcd endpoint, each reaching it as the tunnel host sees it; everything is
    closed on exit.
    """
    host, port = split_host_port(tunnel_host)
    with connect(host, port, settings, ask=ask, warn=warn) as connection:
        yield connection.forward_endpoints(endpoints)


class SSHConnection:
    """One authenticated SSH connection (possibly running over another one's channel)."""

    def __init__(
        self, transport: paramiko.Transport, name: str, settings: SSHSettings, ask: Ask, warn: Warn
    ) -> None:
        self._transport = transport
        self.name = name
        self._settings = settings
        self._ask = ask
        self._warn = warn
        self._forwarders: list[UnixForwarder] = []
        self._children: list[SSHConnection] = []
        self._lock = threading.Lock()

    def _open(self, kind: str, dest: tuple[str, int] | None = None) -> paramiko.Channel:
        if not self._transport.is_active():
            raise TunnelError(f"tunnel dropped: the connection to {self.name} is closed")
        try:
            if dest is None:
                return self._transport.open_session(timeout=self._settings.timeout)
            return self._transport.open_channel(kind, dest, ("127.0.0.1", 0), timeout=self._settings.timeout)
        except paramiko.ChannelException as exc:
            target = kh.host_string(*dest) if dest else "a session"
            raise TunnelError(f"host {target} unreachable from {self.name}: {exc.text}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _is_timeout(exc):
                raise TunnelError(TIMEOUT_MESSAGE) from exc
            raise TunnelError(f"tunnel dropped: cannot open a channel on {self.name}: {exc}") from exc

    def _session(self, forward_agent: bool | None) -> paramiko.Channel:
        channel = self._open("session")
        if self._settings.forward_agent if forward_agent is None else forward_agent:
            AgentRequestHandler(channel)
        return channel

    def _result(self, status: int) -> int:
        if status >= 0:
            return status
        if not self._transport.is_active():
            raise TunnelError(f"tunnel dropped mid-command: the connection to {self.name} was lost")
        return 255  # the remote command ended without an exit status (killed by a signal)

    def run(
        self,
        command: str,
        *,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        stdin: BinaryIO | None = None,
        forward_agent: bool | None = None,
    ) -> int:
        """Run ``command`` (a shell-quoted string), copying its output; return its exit code."""
        channel = self._session(forward_agent)
        try:
            channel.exec_command(command)
            status = pump_command(
                channel,
                stdout if stdout is not None else sys.stdout.buffer,
                stderr if stderr is not None else sys.stderr.buffer,
                stdin,
            )
        except (paramiko.SSHException, EOFError) as exc:
            if not self._transport.is_active():
                raise TunnelError(
                    f"tunnel dropped mid-command: the connection to {self.name} was lost"
                ) from exc
            raise TunnelError(f"remote command on {self.name} failed: {exc}") from exc
        finally:
            channel.close()
        return self._result(status)

    def shell(self, *, forward_agent: bool | None = None, command: str = "") -> int:
        """An interactive login shell, or ``command`` run the same way (a PTY of the terminal's size when
        stdin is a TTY); its exit code."""
        channel = self._session(forward_agent)
        try:
            status = pump_interactive(channel, command)
        except (paramiko.SSHException, EOFError) as exc:
            raise TunnelError(f"tunnel dropped mid-command: the connection to {self.name} was lost") from exc
        finally:
            channel.close()
        return self._result(status)

    def hop(self, host: str, port: int = DEFAULT_SSH_PORT) -> SSHConnection:
        """SSH to ``host:port`` as this connection's host sees it: direct-tcpip plus a second handshake."""
        channel = self._open("direct-tcpip", (host, port))
        try:
            transport = _handshake(channel, host, port, self._settings, ask=self._ask, warn=self._warn)
        except BaseException:
            channel.close()
            raise
        child = SSHConnection(transport, kh.host_string(host, port), self._settings, self._ask, self._warn)
        with self._lock:
            self._children.append(child)
        return child

    def forward(self, host: str, port: int) -> UnixForwarder:
        """A private unix socket whose connections reach ``host:port`` as this connection's host sees it."""
        self._open("direct-tcpip", (host, port)).close()  # fail now, with a clear error, if it is unreachable
        forwarder = UnixForwarder(
            lambda: self._open("direct-tcpip", (host, port)), kh.host_string(host, port)
        )
        with self._lock:
            self._forwarders.append(forwarder)
        return forwarder

    def forward_endpoints(self, endpoints: Sequence[str]) -> tuple[str, ...]:
        """Map etcd endpoints (``http://host:port``) to ``unix:`` endpoints reaching them through here."""
        out: list[str] = []
        for endpoint in endpoints:
            parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
            if parts.hostname is None:
                raise TunnelError(f"cannot tunnel endpoint {endpoint!r}: no host")
            out.append(self.forward(parts.hostname, parts.port or 2379).endpoint)
        return tuple(out)

    @property
    def host_key(self) -> tuple[str, bytes]:
        """The host key this connection's host presented (and that was checked): type and blob."""
        key = self._transport.get_remote_server_key()
        return key.get_name(), key.asbytes()

    @property
    def active(self) -> bool:
        return self._transport.is_active()

    def close(self) -> None:
        """Close forwarders, hopped connections, then this connection."""
        with self._lock:
            forwarders, self._forwarders = self._forwarders, []
            children, self._children = self._children, []
        for forwarder in forwarders:
            forwarder.close()
        for child in children:
            child.close()
        with contextlib.suppress(Exception):
            self._transport.close()

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
