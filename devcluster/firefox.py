"""A headless Firefox, driven through its built-in Marionette protocol, for checking the dashboard in a second
browser engine.

Debian 12 packages Firefox ESR but no geckodriver (the WebDriver bridge selenium would need, otherwise a
download), and this machine has no internet. Firefox itself speaks Marionette when started with
``--marionette``: length-prefixed JSON over a loopback TCP port (``<bytes>:[0, id, command, params]``,
answered ``[1, id, error, result]``). The few commands the tests use are here: a session, navigate, run a
script. Each browser gets a fresh profile with everything that would call out turned off.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["FIREFOX", "Marionette", "available", "headless_firefox"]

FIREFOX = "/usr/bin/firefox-esr"
PREFS = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "extensions.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "toolkit.telemetry.enabled": False,
}


def available() -> str:
    """'' when Firefox is installed, else what is missing."""
    return "" if shutil.which(FIREFOX) else f"missing {FIREFOX} (scripts/setup installs firefox-esr)"


class MarionetteError(RuntimeError):
    """An error Firefox answered a command with."""


class Marionette:
    """One Marionette connection (a session is opened by ``headless_firefox``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._next_id = 0
        hello = self._receive()
        if not isinstance(hello, dict) or hello.get("applicationType") != "gecko":
            raise MarionetteError(f"not a Marionette server: {hello!r}")

    def _receive(self) -> Any:
        while b":" not in self._buffer:
            self._fill()
        size_text, _, rest = self._buffer.partition(b":")
        size = int(size_text)
        self._buffer = rest
        while len(self._buffer) < size:
            self._fill()
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return json.loads(body)

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise MarionetteError("Firefox closed the connection")
        self._buffer += chunk

    def command(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Send one command; its result (MarionetteError when Firefox answers an error)."""
        self._next_id += 1
        body = json.dumps([0, self._next_id, name, params or {}]).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            reply = self._receive()
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == 1 and reply[1] == self._next_id:
                break
        if reply[2]:
            raise MarionetteError(f"{name}: {reply[2]}")
        return reply[3]

    def navigate(self, url: str) -> None:
        self.command("WebDriver:Navigate", {"url": url})

    def script(self, code: str) -> Any:
        """Run ``code`` (a function body: ``return`` gives the value) in the page; its value."""
        result = self.command("WebDriver:ExecuteScript", {"script": code, "args": []})
        return result.get("value") if isinstance(result, dict) else result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _connect(port: int, process: subprocess.Popen[bytes], limit: float) -> socket.socket:
    deadline = time.monotonic() + limit
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if process.poll() is not None:
                raise MarionetteError(f"Firefox exited ({process.returncode}) before listening") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def headless_firefox(startup: float = 60.0) -> Iterator[Marionette]:
    """A headless Firefox with a fresh profile and a Marionette session; stopped by PID on exit."""
    profile = Path(tempfile.mkdtemp(prefix="fleet-firefox-"))
    port = _free_port()
    prefs = {**PREFS, "marionette.port": port}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(key)}, {json.dumps(value)});\n" for key, value in prefs.items())
    )
    process = subprocess.Popen(
        [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with _connect(port, process, startup) as sock:
            client = Marionette(sock)
            client.command("WebDriver:NewSession", {"capabilities": {}})
            yield client
            with contextlib.suppress(MarionetteError, OSError):
                client.command("WebDriver:DeleteSession")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
