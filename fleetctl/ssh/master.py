"""The tunnel session: a small background process that keeps one SSH connection to a ``--tunnel`` host for
later fleetctl commands (as OpenSSH's ControlMaster), and exits after an idle time.

``python -m fleetctl.ssh.master CONFIG`` (started by fleetctl.ssh.reuse) connects with the settings in CONFIG
(JSON: tunnel host, SSH settings, control socket path, idle seconds), checking the host key by the same
rules as a command (an unknown host is refused: there is no terminal to ask; the command that started it
then connects itself and asks). It prints one JSON line on stdout (``{"ready": ...}`` or ``{"error": ...}``)
and closes stdout, then serves the control socket (mode 0600 in a 0700 directory; a peer of another uid is
dropped).

Protocol, one JSON line each way per client: ``{"forward": ["host:port", ...]}`` ->
``{"endpoints": ["unix:/path", ...], "host": "[h]:p", "host_key": ["ssh-ed25519", "<base64>"]}`` or
``{"error": "<one line>"}``. The client keeps the control connection open while its command runs; the session
ends when no client has been connected for ``idle`` seconds, or when the SSH connection drops.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from fleetd.errors import FleetError

__all__ = ["TunnelMaster", "main"]

logger = logging.getLogger(__name__)

Forward = Callable[[str, int], str]  # (host, port) -> a unix: endpoint reaching it through the connection
_MAX_REQUEST = 64 * 1024
_POLL = 0.5  # seconds between checks of idleness and of the SSH connection


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of a unix-socket peer (Linux SO_PEERCRED); None where it cannot be read."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", raw)
    except OSError:
        return None
    return int(uid)


class TunnelMaster:
    """Serves forward requests on ``listener`` (closed at the end) until idle for ``idle`` seconds or
    ``alive()`` is false.

    Each endpoint is forwarded once (``forward``) and shared by every later request. ``clock`` and ``poll``
    are injectable for tests.
    """

    def __init__(
        self,
        listener: socket.socket,
        forward: Forward,
        *,
        host: str,
        host_key: tuple[str, bytes],
        idle: float,
        alive: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        poll: float = _POLL,
    ) -> None:
        self._listener = listener
        self._forward = forward
        self._host = host
        self._host_key = [host_key[0], base64.b64encode(host_key[1]).decode("ascii")]
        self._idle = idle
        self._alive = alive
        self._clock = clock
        self._poll = poll
        self._endpoints: dict[tuple[str, int], str] = {}
        self._clients: dict[socket.socket, bytes] = {}
        self._idle_since = clock()

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while self._alive() and (self._clients or self._clock() - self._idle_since < self._idle):
                for key, _ in selector.select(self._poll):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(selector)
                    else:
                        self._read(selector, sock)
        finally:
            for client in list(self._clients):
                self._drop(selector, client)
            selector.close()
            self._listener.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        uid = peer_uid(client)
        if uid is not None and uid != os.getuid():
            logger.warning("refused a tunnel session client of uid %d", uid)
            client.close()
            return
        client.setblocking(False)
        self._clients[client] = b""
        selector.register(client, selectors.EVENT_READ)

    def _drop(self, selector: selectors.BaseSelector, client: socket.socket) -> None:
        selector.unregister(client)
        client.close()
        del self._clients[client]
        if not self._clients:
            self._idle_since = self._clock()

    def _read(self, selector: selectors.BaseSelector, client: socket.socket) -> None:
        try:
            data = client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the command ended
            self._drop(selector, client)
            return
        buffered = self._clients[client] + data
        if b"\n" not in buffered:
            if len(buffered) > _MAX_REQUEST:
                self._drop(selector, client)
            else:
                self._clients[client] = buffered
            return
        line, _, rest = buffered.partition(b"\n")
        self._clients[client] = rest
        reply = self._answer(line)
        try:
            client.setblocking(True)
            client.sendall(json.dumps(reply).encode() + b"\n")
            client.setblocking(False)
        except OSError:
            self._drop(selector, client)

    def _answer(self, line: bytes) -> dict[str, object]:
        try:
            request = json.loads(line)
            wanted = [_host_port(str(item)) for item in request["forward"]]
        except (ValueError, KeyError, TypeError) as exc:
            return {"error": f"bad tunnel session request: {exc}"}
        try:
            endpoints = [self._endpoint(host, port) for host, port in wanted]
        except FleetError as exc:
            return {"error": str(exc)}
        return {"endpoints": endpoints, "host": self._host, "host_key": self._host_key}

    def _endpoint(self, host: str, port: int) -> str:
        if (host, port) not in self._endpoints:
            self._endpoints[(host, port)] = self._forward(host, port)
        return self._endpoints[(host, port)]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def bind_private(path: str) -> socket.socket:
    """A listening unix socket at ``path`` (mode 0600), replacing any stale socket there atomically."""
    staging = f"{path}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(staging)
    finally:
        os.umask(old_umask)
    os.chmod(staging, 0o600)
    listener.listen(16)
    os.replace(staging, path)
    return listener


def _report(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
    sys.stdout.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Detach, connect, report ready (or the error) on stdout, serve until idle."""
    # Leave the process that started us at once (it reaps its child and keeps no zombie or open handle);
    # this grandchild carries on, still holding the stdout pipe for the report. No threads exist yet.
    if os.fork() > 0:
        os._exit(0)
    from fleetctl.ssh import tunnel  # noqa: PLC0415 (paramiko only in the session process)
    from fleetctl.ssh.config import SSHSettings, split_host_port  # noqa: PLC0415

    config = json.loads((argv if argv is not None else sys.argv[1:])[0])
    settings = SSHSettings(**config["settings"])
    warnings: list[str] = []
    host, port = split_host_port(config["tunnel"])
    try:
        connection = tunnel.connect(host, port, settings, ask=lambda _question: None, warn=warnings.append)
    except FleetError as exc:
        _report({"error": str(exc), "warnings": warnings})
        return
    with connection:
        path = config["socket"]
        listener = bind_private(path)
        inode = os.stat(path).st_ino
        _report({"ready": True, "warnings": warnings, "pid": os.getpid()})
        try:
            TunnelMaster(
                listener,
                lambda host, port: connection.forward(host, port).endpoint,
                host=connection.name,
                host_key=connection.host_key,
                idle=float(config["idle"]),
                alive=lambda: connection.active,
            ).serve()
        finally:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:  # not replaced by a newer session
                    os.unlink(path)
            listener.close()


if __name__ == "__main__":
    main()
