"""The UnitManager port: what the agent needs from the local systemd.

``fleetd.systemd.dbus.DbusUnitManager`` (the only D-Bus importer) drives the real systemd;
``fleetd.systemd.fake.FakeUnitManager`` honours the same contract in memory for unit tests. One contract
suite runs on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetd.model import UnitName

__all__ = ["SystemdState", "UnitManager"]


@dataclass(frozen=True, slots=True)
class SystemdState:
    """systemd's view of one unit: LoadState, ActiveState, SubState (e.g. loaded/active/running)."""

    load_state: str
    active_state: str
    sub_state: str


class UnitManager(Protocol):
    def loaded_units(self) -> Mapping[UnitName, str]:
        """Units fleet has written into its units directory, with the SHA-1 of their canonical text.

        At start this reflects files left by an earlier fleetd process; afterwards it follows load/unload.
        """
        ...

    async def load(self, name: UnitName, text: str) -> None:
        """Write the canonical ``text`` to the units directory and link it into systemd (runtime).

        A unit with an [Install] section is also enabled (runtime). Needs a ``reload`` to take effect.
        Raises SystemdError (and leaves no file behind) when systemd refuses.
        """
        ...

    async def unload(self, name: UnitName) -> None:
        """Disable, reset-failed and remove the unit's file. Needs a ``reload`` to take effect."""
        ...

    async def reload(self) -> None:
        """systemd daemon-reload."""
        ...

    async def start(self, name: UnitName) -> None:
        """StartUnit(name, "replace"); returns once systemd accepted the job."""
        ...

    async def stop(self, name: UnitName) -> None:
        """StopUnit(name, "replace"); returns once systemd accepted the job."""
        ...

    async def states(self, names: Sequence[UnitName]) -> Mapping[UnitName, SystemdState]:
        """The current states of ``names``, in one batched call."""
        ...

    def changes(self) -> AsyncIterator[UnitName]:
        """Names of fleet units whose state may have changed (from PropertiesChanged signals)."""
        ...

    async def lost(self) -> None:
        """Returns when the connection to systemd is lost (the manager is unusable from then on)."""
        ...

    async def close(self) -> None: ...
