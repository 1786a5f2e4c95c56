"""sd_notify: tell systemd (Type=notify) that fleetd is ready, alive, reloading or stopping.

Messages go as one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without
that variable every call is a no-op, so fleetd behaves the same outside systemd. The watchdog interval comes
from ``$WATCHDOG_USEC`` (honoured only when ``$WATCHDOG_PID`` is absent or names this process); fleetd pings
at half of it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int) -> Notifier:
        watchdog: int | None = None
        owner = environ.get("WATCHDOG_PID", "")
        if not owner or owner == str(pid):
            try:
                watchdog = int(environ.get("WATCHDOG_USEC", ""))
            except ValueError:
                watchdog = None
        return cls(environ.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the watchdog timeout), or None when there is no watchdog."""
        if self.watchdog_usec is None or self.socket_path is None:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, message: str) -> bool:
        """Send one notification (``READY=1``, ``STATUS=...``); False when not under systemd or it failed."""
        if self.socket_path is None:
            return False
        address = "\0" + self.socket_path[1:] if self.socket_path.startswith("@") else self.socket_path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError as exc:
            logger.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")
