"""The UnitManager on a real systemd, over D-Bus (the only D-Bus importer; dbus-fast).

Every dbus-fast or socket exception is mapped to SystemdError in one place, ``_call``. The manager
subscribes to systemd's signals when it connects, so a JobRemoved that arrives before StartUnit returns is
still recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from fleetd.errors import SystemdError
from fleetd.model import UnitName
from fleetd.retry import Sleep, attempts
from fleetd.systemd.changes import ChangeFeed
from fleetd.systemd.protocol import SystemdState
from fleetd.systemd.unitdir import (
    DEFAULT_UNITS_DIRECTORY,
    UnitsDirectory,
    check_unit_name,
    has_install_section,
)

__all__ = ["DbusUnitManager"]

logger = logging.getLogger(__name__)

CONNECT_TRIES = 5  # 15 s of waits in all
_SYSTEMD = "org.freedesktop.systemd1"
_MANAGER_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"
_UNIT = "org.freedesktop.systemd1.Unit"
_UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
_PROPERTIES = "org.freedesktop.DBus.Properties"
_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
_NOTHING_TO_DO_WHEN_UNKNOWN = frozenset({"ResetFailedUnit", "StopUnit", "DisableUnitFiles"})
_MATCHES = (
    f"type='signal',sender='{_SYSTEMD}',interface='{_MANAGER}',member='JobRemoved'",
    f"type='signal',sender='{_SYSTEMD}',interface='{_PROPERTIES}',member='PropertiesChanged',"
    f"path_namespace='{_UNIT_PATH_PREFIX.rstrip('/')}'",
)


def unit_name_of_path(path: str) -> str | None:
    """Undo systemd's object-path escaping (`_2e` -> `.`) of /org/freedesktop/systemd1/unit/<label>."""
    if not path.startswith(_UNIT_PATH_PREFIX):
        return None
    label = path[len(_UNIT_PATH_PREFIX):]
    out: list[str] = []
    i = 0
    while i < len(label):
        if label[i] == "_" and _is_hex(label[i + 1:i + 3]):
            out.append(chr(int(label[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(label[i])
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


class DbusUnitManager:
    """Drives systemd for fleet's units. Build it with ``await DbusUnitManager.connect(...)``."""

    def __init__(self, bus: MessageBus, directory: UnitsDirectory) -> None:
        self._bus = bus
        self._directory = directory
        self._job_results: dict[UnitName, str] = {}
        self._feed = ChangeFeed()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(
        cls, units_directory: Path = DEFAULT_UNITS_DIRECTORY, bus_address: str | None = None
    ) -> DbusUnitManager:
        """Connect to the system bus (or ``bus_address``), subscribe to systemd, read the directory."""
        directory = UnitsDirectory(units_directory)
        try:
            bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
        except (DBusFastError, OSError, EOFError) as exc:
            where = bus_address or "the system bus"
            raise SystemdError(f"cannot connect to {where}: {exc or type(exc).__name__}") from exc
        manager = cls(bus, directory)
        try:
            for rule in _MATCHES:
                await manager._call("AddMatch", "s", [rule], destination="org.freedesktop.DBus",
                                    path="/org/freedesktop/DBus", interface="org.freedesktop.DBus")
            await manager._call("Subscribe")
        except SystemdError:
            bus.disconnect()
            raise
        return manager

    @classmethod
    async def connect_retrying(
        cls,
        units_directory: Path = DEFAULT_UNITS_DIRECTORY,
        bus_address: str | None = None,
        *,
        tries: int = CONNECT_TRIES,
        sleep: Sleep = asyncio.sleep,
    ) -> DbusUnitManager:
        """``connect``, tried ``tries`` times in all, 1 s doubling to 8 s apart: at boot the system bus or
        systemd may not answer yet. The last error is raised."""
        async for attempt in attempts(
            lambda exc: isinstance(exc, SystemdError), tries=tries, initial=1.0, maximum=8.0, sleep=sleep,
            what="connecting to systemd",
        ):
            with attempt:
                return await cls.connect(units_directory, bus_address)
        raise AssertionError("attempts end with a result or the last error")

    # -- UnitManager ------------------------------------------------------------------------------------

    def loaded_units(self) -> Mapping[UnitName, str]:
        return self._directory.hashes()

    async def load(self, name: UnitName, text: str) -> None:
        path = str(self._directory.write(check_unit_name(name), text))
        try:
            with contextlib.suppress(_NotLoaded):  # a new incarnation: not the failure of an earlier one
                await self._call("ResetFailedUnit", "s", [name])
            await self._call("LinkUnitFiles", "asbb", [[path], True, True])
        except SystemdError:
            self._directory.remove(name)
            raise
        if not has_install_section(text):
            return
        try:
            await self._call("EnableUnitFiles", "asbb", [[path], True, True])
        except SystemdError as exc:
            with contextlib.suppress(SystemdError):
                await self._call("DisableUnitFiles", "asb", [[name], True])
            self._directory.remove(name)
            raise SystemdError(f"Failed to enable systemd unit {name}: {exc}") from exc

    async def unload(self, name: UnitName) -> None:
        check_unit_name(name)
        with contextlib.suppress(_NotLoaded):  # no link to remove (a reboot cleared them, a load cut short)
            await self._call("DisableUnitFiles", "asb", [[name], True])
        with contextlib.suppress(_NotLoaded):
            await self._call("ResetFailedUnit", "s", [name])
        self._directory.remove(name)
        self._job_results.pop(name, None)

    async def reload(self) -> None:
        await self._call("Reload")

    async def start(self, name: UnitName) -> None:
        job = await self._call("StartUnit", "ss", [check_unit_name(name), "replace"])
        logger.debug("action=start unit=%s job=%s", name, job[0] if job else None)

    async def stop(self, name: UnitName) -> None:
        try:
            job = await self._call("StopUnit", "ss", [check_unit_name(name), "replace"])
        except _NotLoaded:  # systemd does not know it (e.g. its file was never linked): nothing runs
            logger.debug("action=stop unit=%s: not loaded, nothing to stop", name)
            return
        logger.debug("action=stop unit=%s job=%s", name, job[0] if job else None)

    async def states(self, names: Sequence[UnitName]) -> Mapping[UnitName, SystemdState]:
        if not names:
            return {}
        body = await self._call("ListUnitsByNames", "as", [list(names)])
        return {
            UnitName(row[0]): SystemdState(load_state=row[2], active_state=row[3], sub_state=row[4])
            for row in body[0]
        }

    def changes(self) -> AsyncIterator[UnitName]:
        return self._feed.subscribe()

    async def lost(self) -> None:
        wait_for_disconnect: Any = self._bus.wait_for_disconnect  # untyped in dbus-fast
        # shielded: it awaits the bus's own future, which a cancelled waiter would cancel, and close()
        # would then raise CancelledError
        with contextlib.suppress(Exception):  # it raises what ended the connection: lost either way
            await asyncio.shield(wait_for_disconnect())

    async def close(self) -> None:
        self._bus.remove_message_handler(self._on_message)
        self._bus.disconnect()
        wait_for_disconnect: Any = self._bus.wait_for_disconnect  # untyped in dbus-fast
        with contextlib.suppress(DBusFastError, OSError, EOFError):
            await wait_for_disconnect()

    # -- beyond the port -----------------------------------------------------------------------------------

    def job_result(self, name: UnitName) -> str | None:
        """The result of the last finished systemd job of a fleet unit ("done", "failed", ...), if any."""
        return self._job_results.get(name)

    # -- internals ---------------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "JobRemoved" and msg.interface == _MANAGER:
            _job_id, _job_path, unit, result = msg.body
            if unit in self._directory:
                self._job_results[UnitName(unit)] = result
                self._notify(UnitName(unit))
        elif msg.member == "PropertiesChanged" and msg.body and msg.body[0] == _UNIT:
            unit = unit_name_of_path(msg.path or "")
            if unit is not None and unit in self._directory:
                self._notify(UnitName(unit))

    def _notify(self, name: UnitName) -> None:
        self._feed.notify(name)

    async def _call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        destination: str = _SYSTEMD,
        path: str = _MANAGER_PATH,
        interface: str = _MANAGER,
    ) -> list[Any]:
        """One method call; the one place that maps D-Bus failures to SystemdError."""
        try:
            reply = await self._bus.call(
                Message(destination=destination, path=path, interface=interface, member=member,
                        signature=signature, body=list(body))
            )
        except (DBusFastError, OSError, EOFError) as exc:
            raise SystemdError(f"{member} failed: {exc or type(exc).__name__}") from exc
        if reply is None:
            raise SystemdError(f"{member} failed: no reply")
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            if reply.error_name == _NO_SUCH_UNIT and member in _NOTHING_TO_DO_WHEN_UNKNOWN:
                raise _NotLoaded(text)
            raise SystemdError(f"{member} failed: {text}")
        return list(reply.body)


class _NotLoaded(SystemdError):
    """ResetFailedUnit, StopUnit or DisableUnitFiles on a unit systemd has not loaded or has no link of:
    nothing to reset, stop or unlink."""
