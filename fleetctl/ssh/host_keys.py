"""Host-key policy for fleetctl's SSH: our known_hosts file, the original's prompt, the loud warning.

``HostKeyGate`` reads the known_hosts file once per connection (fleetctl.ssh.known_hosts parses and matches),
restricts the host-key algorithms offered to the key types on file for the host, and decides on the key the
host presents: a key marked ``@revoked`` for the host prints the REVOKED HOST KEY block and fails (whatever
other lines say); a known key passes; a changed key prints the REMOTE HOST IDENTIFICATION HAS CHANGED block
and fails; an unknown host is asked about on the terminal and only the answer ``yes`` (as OpenSSH: ``y`` is
not yes) appends it (directory 0700, file 0644); it fails clearly on any other answer or without a terminal.
``strict=False`` turns all of it off. No paramiko here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from fleetctl.output import visible
from fleetctl.ssh import known_hosts as kh
from fleetd.errors import TunnelError

__all__ = ["Ask", "HostKeyGate", "Warn", "ask_on_terminal", "host_key_family", "warn_on_stderr"]

logger = logging.getLogger(__name__)

Ask = Callable[[str], str | None]  # question -> answer, or None when nobody can be asked
Warn = Callable[[str], None]


def ask_on_terminal(question: str) -> str | None:
    """Ask on stderr and read the answer from stdin when stdin is a TTY; None without a TTY."""
    if not sys.stdin.isatty():
        return None
    sys.stderr.write(visible(question, multiline=True))  # the host name comes from the registry
    sys.stderr.flush()
    try:
        return sys.stdin.readline().strip()
    except UnicodeDecodeError:  # an answer that is not text is not yes
        return "\ufffd"


def warn_on_stderr(text: str) -> None:
    sys.stderr.write(visible(text, multiline=True) + "\n")
    sys.stderr.flush()


def host_key_family(algorithm: str) -> str:
    """The key type a host-key algorithm belongs to (rsa-sha2-* are signatures of ssh-rsa keys)."""
    base = algorithm.removesuffix("-cert-v01@openssh.com")
    return "ssh-rsa" if base.startswith("rsa-sha2-") else base


class HostKeyGate:
    """Reads known_hosts once per connection, restricts algorithms, and decides on the presented key."""

    def __init__(self, name: str, known_hosts_file: str, strict: bool, ask: Ask, warn: Warn) -> None:
        self.name = name  # the host as filed: ``host`` or ``[host]:port``
        self.path = os.path.expanduser(known_hosts_file)
        self._strict = strict
        self._ask = ask
        self._warn = warn
        text = ""
        if self._strict:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise TunnelError(f"cannot read known hosts file {self.path}: {exc.strerror}") from exc
        self._text = text
        self._known = kh.parse_known_hosts(text, self.path)
        for warning in self._known.warnings:
            logger.warning("%s", warning)

    def allowed_algorithms(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """The host-key algorithms to offer: those of the key types on file for this host (all if none)."""
        types = kh.known_key_types(self._known, self.name) if self._strict else ()
        wanted = tuple(a for a in offered if host_key_family(a) in types)
        return wanted or offered

    def check(self, key_type: str, blob: bytes) -> None:
        """Accept a known key; warn and fail on a changed one; ask about an unknown host (append on yes)."""
        if not self._strict:
            return
        verdict = kh.check_host_key(self._known, self.name, key_type, blob)
        if verdict is kh.HostKeyCheck.REVOKED:
            self._warn(kh.revoked_host_warning(self.name, key_type, blob, self.path))
            raise TunnelError(
                f"host key verification failed: the key of {self.name} is marked @revoked in {self.path};"
                " refusing to connect (ask the host's administrator for its new key)"
            )
        if verdict is kh.HostKeyCheck.MATCH:
            return
        if verdict is kh.HostKeyCheck.MISMATCH:
            self._warn(kh.changed_host_warning(self.name, key_type, blob, self.path))
            raise TunnelError(f"host key mismatch for {self.name}: it differs from the key in {self.path}")
        answer = self._ask(kh.unknown_host_question(self.name, key_type, blob))
        if answer is None:
            raise TunnelError(
                f"host key verification failed: {self.name} is not in {self.path} and there is no terminal"
                " to confirm it (add its key to that file, or use --strict-host-key-checking=false)"
            )
        reply = answer.strip().lower()
        if reply != "yes":
            self._warn("Host key verification failed.")
            detail = "" if reply == "no" else f" (answer {answer.strip()!r}: type yes to trust the host)"
            raise TunnelError(f"host key verification failed: unauthorized host {self.name}{detail}")
        self._append(key_type, blob)
        self._warn(kh.permanently_added_message(self.name, key_type))

    def _append(self, key_type: str, blob: bytes) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700)
                os.chmod(directory, 0o700)
            existed = os.path.exists(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if not existed:
                    os.fchmod(fd, 0o644)
                handle.write(kh.appended_text(self._text, self.name, key_type, blob))
        except OSError as exc:
            raise TunnelError(
                f"cannot add {self.name} to known hosts file {self.path}: {exc.strerror}"
            ) from exc
