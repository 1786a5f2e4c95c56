"""The FleetError hierarchy: every error fleet raises on purpose is one of these."""

from __future__ import annotations

__all__ = [
    "CASConflict",
    "ConfigError",
    "FleetError",
    "NotFound",
    "RegistryError",
    "RegistryUnavailable",
    "SystemdError",
    "TunnelError",
    "UnitFileError",
    "UnitNameError",
]


class FleetError(Exception):
    """Base of every deliberate fleet error; ``str(err)`` is a one-line message for the user."""


class UnitFileError(FleetError):
    """A unit file that cannot be parsed or whose [X-Fleet] options are invalid.

    ``line`` is the 1-based line number of the problem, or None when the problem is not tied to a line.
    """

    def __init__(self, msg: str, line: int | None = None) -> None:
        self.msg = msg
        self.line = line
        super().__init__(f"line {line}: {msg}" if line is not None else msg)


class UnitNameError(FleetError):
    """An invalid unit name; the message is the reference's exact text (e.g. `unit name must contain "."`)."""


class NotFound(FleetError):
    """A unit, machine or other named thing that does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name} not found")


class ConfigError(FleetError):
    """A bad configuration value; the message names the key and the value."""


class RegistryError(FleetError):
    """Any failure talking to the registry (etcd)."""


class RegistryUnavailable(RegistryError):
    """etcd cannot be reached (all endpoints down, timeout, auth or TLS failure)."""


class RequestNotSent(RegistryUnavailable):
    """No connection to etcd could be made: the request never left, so sending it again is always safe."""


class CASConflict(RegistryError):
    """A transaction's compare failed: the data changed since it was read, or leadership was lost."""


class SystemdError(FleetError):
    """A systemd (D-Bus) call failed."""


class TunnelError(FleetError):
    """An SSH tunnel or remote-command failure."""
