"""Listen for the API: on a unix socket (mode 0660; fleetd runs as root) and, if configured, one TCP address.

The sockets are bound at start (so a client can connect at once, and a taken address fails fleetd's start),
but the HTTP server and its libraries (``fleetd.api.serve``: aiohttp, the dashboard) load only when the
first client connects: a fleetd nobody queries does not carry them. That connection waits in the backlog
until the server accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable

from fleetd.registry.registry import Registry
from fleetd.values import parse_host_port

__all__ = ["ApiServer", "bind_tcp", "bind_unix"]

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o660
BACKLOG = 128
SUN_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with its terminating NUL)


def bind_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path``, mode 0660. It is set up under a staging name beside ``path`` and
    renamed into place, so the path appears only once it accepts connections, with its mode set. A stale
    socket file there is replaced; any other file is an error."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise FileExistsError(errno.EEXIST, "a file that is not a socket is in the way", path)
    staging = os.path.join(os.path.dirname(path), f".{os.getpid():x}.sock~")
    if len(os.fsencode(staging)) > SUN_PATH_MAX:  # too long for a socket address, though the path fits
        staging = path  # set up in place: the path appears when bound, a moment before it listens
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(staging).st_mode):  # a stale socket file
            os.unlink(staging)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(staging)
        try:
            os.chmod(staging, SOCKET_MODE)
            sock.listen(BACKLOG)
            sock.setblocking(False)
            os.rename(staging, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def bind_tcp(listen: str) -> socket.socket:
    """A listening TCP socket at ``listen`` (HOST:PORT; the host's first address)."""
    host, port = parse_host_port(listen)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    def bind(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)

    return _listening(socket.socket(family, kind, proto), bind)


def _listening(sock: socket.socket, bind: Callable[[socket.socket], None]) -> socket.socket:
    """``sock`` bound by ``bind``, listening, non-blocking; closed if any step fails."""
    try:
        bind(sock)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def first_connection(socks: list[socket.socket]) -> None:
    """Until a client is waiting on one of ``socks`` (nothing is accepted here)."""
    loop = asyncio.get_running_loop()
    waiting = loop.create_future()

    def ready() -> None:
        if not waiting.done():
            waiting.set_result(None)

    for sock in socks:
        loop.add_reader(sock.fileno(), ready)
    try:
        await waiting
    finally:
        for sock in socks:
            loop.remove_reader(sock.fileno())


class ApiServer:
    """Runs the API until cancelled, on ``socket_path`` and ``listen`` (HOST:PORT); '' for neither.

    With a TCP address the listener also serves the web dashboard at ``/`` (its journals: this machine's
    units)."""

    def __init__(
        self, registry: Registry, *, socket_path: str, listen: str, token_limit: int, machine_id: str = ""
    ) -> None:
        self._registry, self._token_limit, self._machine_id = registry, token_limit, machine_id
        self._socket_path = socket_path
        self._listen = listen

    async def run(self) -> None:
        socks: list[socket.socket] = []
        try:
            if self._socket_path:
                socks.append(bind_unix(self._socket_path))
                logger.info("API listening on %s", self._socket_path)
            if self._listen:
                socks.append(bind_tcp(self._listen))
                logger.info("API listening on %s", self._listen)
            if not socks:
                return
            await first_connection(socks)
            from fleetd.api.serve import serve  # noqa: PLC0415 - loaded for the first client, see above

            await serve(
                self._registry, socks, token_limit=self._token_limit, machine_id=self._machine_id,
                dashboard=bool(self._listen),
            )
        finally:
            for sock in socks:
                sock.close()
