"""Byte pumps for SSH sessions: a remote command's output, and an interactive terminal.

The channel is anything with the small ``SessionChannel`` surface (a paramiko Channel in practice; paramiko
itself is imported only by fleetctl.ssh.tunnel). Both pumps return the channel's exit status, or -1 when the
channel ended without one (the caller decides whether the connection was lost).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from types import FrameType
from typing import BinaryIO, Protocol

__all__ = ["SessionChannel", "pump_command", "pump_interactive"]

_CHUNK = 32 * 1024
_IDLE = 1.0  # seconds: the longest a pump sleeps before re-checking the channel
_TERM = "xterm-256color"


class SessionChannel(Protocol):
    """The part of a paramiko Channel the pumps use."""

    closed: bool
    eof_received: int  # paramiko keeps it as 0/1

    def fileno(self) -> int: ...
    def recv(self, nbytes: int) -> bytes: ...
    def recv_ready(self) -> bool: ...
    def recv_stderr(self, nbytes: int) -> bytes: ...
    def recv_stderr_ready(self) -> bool: ...
    def exit_status_ready(self) -> bool: ...
    def recv_exit_status(self) -> int: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def get_pty(self, term: str, width: int, height: int) -> None: ...
    def invoke_shell(self) -> None: ...
    def exec_command(self, command: str) -> None: ...
    def resize_pty(self, width: int, height: int) -> None: ...


def _copy_stdin(channel: SessionChannel, stdin: BinaryIO) -> None:
    """Copy stdin to the channel until EOF, then send EOF (runs on a daemon thread)."""
    with contextlib.suppress(OSError, EOFError, ValueError):
        fd = stdin.fileno()
        while data := os.read(fd, _CHUNK):
            channel.sendall(data)
        channel.shutdown_write()


def _drain(channel: SessionChannel, stdout: BinaryIO, stderr: BinaryIO) -> bool:
    """Copy whatever output is buffered; True if anything was copied."""
    copied = False
    if channel.recv_ready():
        stdout.write(channel.recv(_CHUNK))
        stdout.flush()
        copied = True
    if channel.recv_stderr_ready():
        stderr.write(channel.recv_stderr(_CHUNK))
        stderr.flush()
        copied = True
    return copied


def pump_command(channel: SessionChannel, stdout: BinaryIO, stderr: BinaryIO, stdin: BinaryIO | None) -> int:
    """Copy a running command's stdout/stderr (and stdin, if given) until it ends; return its exit status."""
    if stdin is not None:
        threading.Thread(target=_copy_stdin, args=(channel, stdin), name="ssh stdin", daemon=True).start()
    while True:
        if _drain(channel, stdout, stderr):
            continue
        if channel.closed or (channel.eof_received and channel.exit_status_ready()):
            while _drain(channel, stdout, stderr):
                pass
            break
        select.select([channel], [], [], _IDLE)
    return channel.recv_exit_status()


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


def pump_interactive(channel: SessionChannel, command: str = "") -> int:
    """Run a login shell (or ``command``, e.g. one opening a shell elsewhere) on the channel wired to this
    process's terminal; return its exit status."""
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    is_tty = os.isatty(stdin_fd)
    saved_mode = None
    saved_handler: signal.Handlers | object | None = None
    if is_tty:
        width, height = _terminal_size(stdin_fd)
        channel.get_pty(term=_TERM, width=width, height=height)
    if command:
        channel.exec_command(command)
    else:
        channel.invoke_shell()
    try:
        if is_tty:
            saved_mode = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd)

            def on_resize(_signum: int, _frame: FrameType | None) -> None:
                channel.resize_pty(*_terminal_size(stdin_fd))

            if threading.current_thread() is threading.main_thread():
                saved_handler = signal.signal(signal.SIGWINCH, on_resize)
        _pump_terminal(channel, stdin_fd, stdout_fd)
    finally:
        if saved_mode is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_mode)
        if saved_handler is not None:
            signal.signal(signal.SIGWINCH, saved_handler)  # type: ignore[arg-type]
    return channel.recv_exit_status()


def _pump_terminal(channel: SessionChannel, stdin_fd: int, stdout_fd: int) -> None:
    stdin_open = True
    while True:
        watched: list[int | SessionChannel] = [channel]
        if stdin_open:
            watched.append(stdin_fd)
        try:
            readable, _, _ = select.select(watched, [], [], _IDLE)
        except InterruptedError:  # SIGWINCH
            continue
        if channel in readable or channel.recv_ready() or channel.recv_stderr_ready():
            data = b""
            if channel.recv_ready():
                data += channel.recv(_CHUNK)
            if channel.recv_stderr_ready():
                data += channel.recv_stderr(_CHUNK)
            if data:
                os.write(stdout_fd, data)
            elif channel.closed or channel.eof_received:
                return
        if stdin_fd in readable:
            data = os.read(stdin_fd, _CHUNK)
            if data:
                channel.sendall(data)
            else:
                stdin_open = False
                channel.shutdown_write()
