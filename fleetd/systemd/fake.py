"""FakeUnitManager: the UnitManager contract in memory, for testing the agent shell without systemd.

It keeps a units "directory" (name -> text) and systemd states, honours `[Install] WantedBy=` (pulled in when
the wanted unit starts) and `BindsTo=` (stopped with the unit it binds to), records every call in ``calls``,
and takes injected failures: ``fail_next("start", name)`` makes the next StartUnit of ``name`` raise,
``fail_start(name)`` makes every start of ``name`` end in a failed job and a failed unit, and
``lose_connection()`` makes ``lost()`` return, as a dropped system bus does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence

from fleetd.errors import SystemdError, UnitNameError
from fleetd.model import UnitName
from fleetd.systemd.changes import ChangeFeed
from fleetd.systemd.protocol import SystemdState
from fleetd.systemd.unitdir import check_unit_name, has_install_section, text_hash

__all__ = ["FakeUnitManager"]

_INACTIVE = SystemdState("loaded", "inactive", "dead")
_RUNNING = SystemdState("loaded", "active", "running")
_FAILED = SystemdState("loaded", "failed", "failed")
_NOT_FOUND = SystemdState("not-found", "inactive", "dead")
_MEMBERS = {
    "load": "LinkUnitFiles", "unload": "DisableUnitFiles", "reload": "Reload", "start": "StartUnit",
    "stop": "StopUnit", "states": "ListUnitsByNames",
}


def _values(text: str, key: str) -> list[str]:
    pattern = re.compile(rf"^[ \t]*{key}[ \t]*=(.*)$", re.MULTILINE)
    return [word for line in pattern.findall(text) for word in line.split()]


class FakeUnitManager:
    def __init__(self, files: Mapping[UnitName, str] | None = None) -> None:
        """``files``: unit files left in the units directory by an earlier fleetd."""
        self._files: dict[UnitName, str] = dict(files or {})
        self._hashes: dict[UnitName, tuple[str, str]] = {}  # name -> (text, hash), kept as the real dir does
        self._states: dict[UnitName, SystemdState] = {}
        self._job_results: dict[UnitName, str] = {}
        self._failures: list[tuple[str, UnitName | None, str]] = []
        self._failing_starts: set[UnitName] = set()
        self._feed = ChangeFeed()
        self._lost = asyncio.Event()
        self.calls: list[tuple[str, ...]] = []
        self.reloads = 0
        self.pending_reload = False
        self.closed = False

    # -- test controls -----------------------------------------------------------------------------------

    def fail_next(self, method: str, name: UnitName | None = None, message: str = "injected failure") -> None:
        """The next call of ``method`` ("load", "start", ...) for ``name`` (or any) raises SystemdError."""
        if method not in _MEMBERS:
            raise ValueError(f"unknown method {method!r}")
        self._failures.append((method, name, message))

    def fail_start(self, name: UnitName) -> None:
        """Every start of ``name`` ends in a failed job and a failed unit (as ExecStart=/bin/false would)."""
        self._failing_starts.add(name)

    def crash(self, name: UnitName) -> None:
        """The unit's process died: it becomes failed and a change is reported."""
        self._set(name, _FAILED)

    def lose_connection(self) -> None:
        """The connection to systemd drops: ``lost()`` returns (once per call of this)."""
        self._lost.set()

    def files(self) -> Mapping[UnitName, str]:
        """The units "directory": name -> text, as a new manager would find it."""
        return dict(self._files)

    # -- UnitManager ---------------------------------------------------------------------------------------

    def loaded_units(self) -> Mapping[UnitName, str]:
        return {name: self._hash(name, text) for name, text in sorted(self._files.items())}

    def _hash(self, name: UnitName, text: str) -> str:
        known = self._hashes.get(name)
        if known is None or known[0] != text:
            known = self._hashes[name] = (text, text_hash(text))
        return known[1]

    async def load(self, name: UnitName, text: str) -> None:
        self._record("load", check_unit_name(name))
        if has_install_section(text):
            for wanted_by in _values(text, "WantedBy") + _values(text, "RequiredBy"):
                try:
                    check_unit_name(wanted_by)
                except UnitNameError as exc:
                    raise SystemdError(
                        f"Failed to enable systemd unit {name}: EnableUnitFiles failed: "
                        f'"{wanted_by}" is not a valid unit name.'
                    ) from exc
        self._files[name] = text
        if self._state(name).active_state == "failed":  # reset-failed, as the real manager does on load
            self._states.pop(name, None)
        self.pending_reload = True

    async def unload(self, name: UnitName) -> None:
        self._record("unload", check_unit_name(name))
        self._files.pop(name, None)
        self._hashes.pop(name, None)
        self._job_results.pop(name, None)
        state = self._states.get(name)
        if state is None or state.active_state != "active":
            self._states.pop(name, None)
        self.pending_reload = True

    async def reload(self) -> None:
        self._record("reload")
        self.reloads += 1
        self.pending_reload = False

    async def start(self, name: UnitName) -> None:
        self._record("start", check_unit_name(name))
        self._require(name, "StartUnit")
        self._start(name)

    async def stop(self, name: UnitName) -> None:
        self._record("stop", check_unit_name(name))
        if name in self._files or name in self._states:  # an unknown unit: nothing to stop, as systemd
            self._stop(name)

    async def states(self, names: Sequence[UnitName]) -> Mapping[UnitName, SystemdState]:
        self._record("states", *names)
        return {name: self._state(name) for name in names}

    def changes(self) -> AsyncIterator[UnitName]:
        return self._feed.subscribe()

    async def lost(self) -> None:
        await self._lost.wait()
        self._lost.clear()  # the fake stands for the next connection too

    async def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True

    def job_result(self, name: UnitName) -> str | None:
        return self._job_results.get(name)

    # -- internals ---------------------------------------------------------------------------------------

    def _record(self, method: str, *args: str) -> None:
        self.calls.append((method, *args))
        for index, (failing, name, message) in enumerate(self._failures):
            if failing == method and (name is None or name in args):
                del self._failures[index]
                raise SystemdError(f"{_MEMBERS[method]} failed: {message}")

    def _require(self, name: UnitName, member: str) -> None:
        if name not in self._files and name not in self._states:
            raise SystemdError(f"{member} failed: Unit {name} not found.")

    def _state(self, name: UnitName) -> SystemdState:
        if name in self._states:
            return self._states[name]
        return _INACTIVE if name in self._files else _NOT_FOUND

    def _start(self, name: UnitName) -> None:
        if self._state(name).active_state == "active":
            self._finish_job(name, "done")
            return
        if name in self._failing_starts:
            self._set(name, _FAILED)
            self._finish_job(name, "failed")
            return
        self._set(name, _RUNNING)
        self._finish_job(name, "done")
        for other, text in sorted(self._files.items()):
            if has_install_section(text) and name in _values(text, "WantedBy"):
                self._start(other)

    def _stop(self, name: UnitName) -> None:
        if self._state(name).active_state == "active":
            self._set(name, _INACTIVE if name in self._files else _NOT_FOUND)
        self._finish_job(name, "done")
        for other, text in sorted(self._files.items()):
            if name in _values(text, "BindsTo") and self._state(other).active_state == "active":
                self._stop(other)

    def _finish_job(self, name: UnitName, result: str) -> None:
        self._job_results[name] = result
        self._notify(name)

    def _set(self, name: UnitName, state: SystemdState) -> None:
        if state in (_INACTIVE, _NOT_FOUND):
            self._states.pop(name, None)
        else:
            self._states[name] = state
        self._notify(name)

    def _notify(self, name: UnitName) -> None:
        if name not in self._files:
            return
        self._feed.notify(name)
