"""A private unix-socket forwarder: each accepted connection is pumped to a fresh channel.

The listening socket lives in a fresh 0700 temporary directory, so only this user can reach it. gRPC (or
anything else) dials ``unix:<path>``; every connection it opens becomes one channel made by ``open_channel``
(for the SSH tunnel: a ``direct-tcpip`` channel to the endpoint as the tunnel host sees it), and one thread
per connection copies bytes both ways until either side closes. ``close()`` stops the listener, closes every
pair and removes the directory. No paramiko here: a channel is anything with the small ``Channel`` surface
below.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["Channel", "UnixForwarder"]

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_POLL = 1.0  # seconds between checks of the stop flag while idle (closing wakes the pumps at once)


class Channel(Protocol):
    """The part of a paramiko Channel the forwarder uses."""

    def fileno(self) -> int: ...
    def recv(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class UnixForwarder:
    """Listen on a private unix socket; pump each connection through its own channel."""

    def __init__(self, open_channel: Callable[[], Channel], label: str) -> None:
        self._open_channel = open_channel
        self._label = label
        self._dir = tempfile.mkdtemp(prefix="fleetctl-tunnel-")  # mkdtemp creates it 0700
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "endpoint.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, Channel]] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"forward {label}", daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self) -> str:
        """The endpoint to give gRPC: ``unix:<path>``."""
        return f"unix:{self.path}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener, self._wake_reader], [], [])
            if self._stop.is_set():
                return
            if self._listener not in readable:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                channel = self._open_channel()
            except Exception as exc:  # any failure to open: drop this one connection, keep listening
                logger.warning("cannot open a channel to %s: %s", self._label, exc)
                conn.close()
                continue
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    channel.close()
                    return
                self._pairs.append((conn, channel))
                thread = threading.Thread(
                    target=self._pump, args=(conn, channel), name=f"pump {self._label}", daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _pump(self, conn: socket.socket, channel: Channel) -> None:
        local_open = remote_open = True
        try:
            while (local_open or remote_open) and not self._stop.is_set():
                watched: list[socket.socket | Channel] = []
                if local_open:
                    watched.append(conn)
                if remote_open:
                    watched.append(channel)
                readable, _, _ = select.select(watched, [], [], _POLL)
                if conn in readable:
                    data = conn.recv(_CHUNK)
                    if data:
                        channel.sendall(data)
                    else:
                        local_open = False
                        channel.shutdown_write()
                if channel in readable:
                    data = channel.recv(_CHUNK)
                    if data:
                        conn.sendall(data)
                    else:
                        remote_open = False
                        with contextlib.suppress(OSError):
                            conn.shutdown(socket.SHUT_WR)
        except OSError as exc:
            logger.debug("forwarded connection to %s ended: %s", self._label, exc)
        finally:
            self._close_pair(conn, channel)

    def _close_pair(self, conn: socket.socket, channel: Channel) -> None:
        with self._lock:
            if (conn, channel) in self._pairs:
                self._pairs.remove((conn, channel))
        conn.close()
        channel.close()

    def close(self) -> None:
        """Stop listening, close every forwarded connection, remove the socket directory."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake_writer.send(b"x")
        self._acceptor.join()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
        with self._lock:
            pairs = list(self._pairs)
            threads = list(self._threads)
        for conn, channel in pairs:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            channel.close()
        for thread in threads:
            thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> UnixForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
