"""The UnitManager contract: one suite that FakeUnitManager and DbusUnitManager on a real systemd must pass.

Spec §8.2 TestSystemdUnitFlow and TestInstallUnit, at the unit-manager level. Subclass ``UnitManagerContract``
and provide ``open_manager`` (an async context manager yielding a manager on a units directory) and, where the
implementation cannot run processes, ``arrange_failing_start``. Every scenario runs in a fresh event loop with
a fresh manager, uses unit names unique to the test, and unloads its units, so one systemd serves many tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import pytest

from fleetd.errors import SystemdError, UnitNameError
from fleetd.model import UnitName
from fleetd.systemd.protocol import SystemdState, UnitManager
from fleetd.unitfile.unit import UnitFile

INACTIVE = SystemdState("loaded", "inactive", "dead")
RUNNING = SystemdState("loaded", "active", "running")
FAILED = SystemdState("loaded", "failed", "failed")


class ContractManager(UnitManager, Protocol):
    def job_result(self, name: UnitName) -> str | None: ...


Scenario = Callable[[ContractManager], Awaitable[None]]


def service(description: str, *, extra_unit: str = "", extra: str = "") -> str:
    return (
        f"[Unit]\nDescription={description}\n{extra_unit}\n"
        f"[Service]\nExecStart=/bin/sleep infinity\n{extra}"
    )


FAILING = "[Unit]\nDescription=always fails\n\n[Service]\nType=oneshot\nExecStart=/bin/false\n"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def state_becomes(manager: UnitManager, name: UnitName, want: SystemdState) -> None:
    async def check() -> bool:
        return (await manager.states([name]))[name] == want

    try:
        await eventually(check)
    except AssertionError:
        got = (await manager.states([name]))[name]
        raise AssertionError(f"{name}: {got} != {want}") from None


class UnitManagerContract:
    on_disk = True  # the manager keeps its units directory on disk (checked after each scenario)

    def open_manager(self, units_directory: Path) -> AbstractAsyncContextManager[ContractManager]:
        raise NotImplementedError

    def arrange_failing_start(self, manager: ContractManager, name: UnitName) -> None:
        """Make starts of ``name`` fail; a real systemd needs nothing (its ExecStart=/bin/false fails)."""

    def arrange_left_file(self, units_dir: Path, name: UnitName, text: str) -> None:
        """Leave a unit file in ``units_dir`` that the manager never loaded (nothing linked in systemd), as a
        reboot that cleared systemd's runtime links, or a load cut short, leaves it."""
        units_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        (units_dir / name).write_text(text)

    @pytest.fixture
    def units_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "units"

    def run(self, units_dir: Path, scenario: Scenario, *names: UnitName) -> None:
        async def main() -> None:
            async with self.open_manager(units_dir) as manager:
                try:
                    await scenario(manager)
                finally:
                    for name in names:
                        if name in manager.loaded_units():
                            await manager.stop(name)
                            await manager.unload(name)
                    await manager.reload()

        asyncio.run(main())

    @staticmethod
    def name(base: str) -> UnitName:
        return UnitName(f"contract-{uuid.uuid4().hex[:8]}-{base}")

    # -- TestSystemdUnitFlow --------------------------------------------------------------------------------

    def test_empty_directory_has_no_units(self, units_dir: Path) -> None:
        async def scenario(manager: ContractManager) -> None:
            assert dict(manager.loaded_units()) == {}

        self.run(units_dir, scenario)
        if self.on_disk:
            assert units_dir.is_dir()
            assert units_dir.stat().st_mode & 0o777 == 0o755

    def test_load_lists_the_unit_with_its_hash_inactive(self, units_dir: Path) -> None:
        hello = self.name("hello.service")
        text = service("hello")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(hello, text)
            await manager.reload()
            assert dict(manager.loaded_units()) == {hello: UnitFile.from_text(text).hash}
            assert await manager.states([hello]) == {hello: INACTIVE}

        self.run(units_dir, scenario, hello)

    def test_start_then_stop(self, units_dir: Path) -> None:
        hello = self.name("hello.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(hello, service("hello"))
            await manager.reload()
            await manager.start(hello)
            await state_becomes(manager, hello, RUNNING)
            await eventually(lambda: _is(manager.job_result(hello), "done"))
            await manager.stop(hello)
            await state_becomes(manager, hello, INACTIVE)

        self.run(units_dir, scenario, hello)

    def test_unload_empties_the_directory_and_systemd_forgets(self, units_dir: Path) -> None:
        hello = self.name("hello.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(hello, service("hello"))
            await manager.reload()
            await manager.start(hello)
            await state_becomes(manager, hello, RUNNING)
            await manager.stop(hello)
            await manager.unload(hello)
            await manager.reload()
            assert dict(manager.loaded_units()) == {}
            assert (await manager.states([hello]))[hello].load_state == "not-found"

        self.run(units_dir, scenario, hello)
        if self.on_disk:
            assert list(units_dir.iterdir()) == []

    def test_a_new_manager_finds_the_units_left_in_the_directory(self, units_dir: Path) -> None:
        hello = self.name("hello.service")
        text = service("hello")

        async def first(manager: ContractManager) -> None:
            await manager.load(hello, text)

        async def second(manager: ContractManager) -> None:
            assert dict(manager.loaded_units()) == {hello: UnitFile.from_text(text).hash}

        async def main() -> None:
            async with self.open_manager(units_dir) as manager:
                await first(manager)

        asyncio.run(main())
        self.run(units_dir, second, hello)

    # -- TestInstallUnit ------------------------------------------------------------------------------------

    def test_install_wanted_by_pulls_the_unit_in(self, units_dir: Path) -> None:
        hello = self.name("hello.service")
        discovery = self.name("discovery.service")
        discovery_text = service(
            "discovery", extra_unit=f"BindsTo={hello}\n", extra=f"\n[Install]\nWantedBy={hello}\n"
        )

        async def scenario(manager: ContractManager) -> None:
            await manager.load(hello, service("hello"))
            await manager.load(discovery, discovery_text)
            await manager.reload()
            assert await manager.states([hello, discovery]) == {hello: INACTIVE, discovery: INACTIVE}
            await manager.start(hello)
            await state_becomes(manager, discovery, RUNNING)
            await manager.stop(hello)
            await state_becomes(manager, discovery, INACTIVE)

        self.run(units_dir, scenario, discovery, hello)

    # -- states, changes, failures --------------------------------------------------------------------------

    def test_states_of_several_units_in_one_call(self, units_dir: Path) -> None:
        one, two, unknown = self.name("one.service"), self.name("two.service"), self.name("none.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(one, service("one"))
            await manager.load(two, service("two"))
            await manager.reload()
            await manager.start(two)
            await state_becomes(manager, two, RUNNING)
            states = await manager.states([one, two, unknown])
            assert states[one] == INACTIVE
            assert states[two] == RUNNING
            assert states[unknown].load_state == "not-found"
            assert await manager.states([]) == {}

        self.run(units_dir, scenario, one, two)

    def test_changes_report_a_start(self, units_dir: Path) -> None:
        hello = self.name("hello.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(hello, service("hello"))
            await manager.reload()
            changes = manager.changes()
            next_change = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0)
            await manager.start(hello)
            try:
                assert await asyncio.wait_for(next_change, 10) == hello
            finally:
                next_change.cancel()
                await _close(changes)

        self.run(units_dir, scenario, hello)

    def test_a_failing_unit_fails_clearly(self, units_dir: Path) -> None:
        broken = self.name("broken.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(broken, FAILING)
            await manager.reload()
            self.arrange_failing_start(manager, broken)
            await manager.start(broken)
            await eventually(lambda: _is(manager.job_result(broken), "failed"))
            await state_becomes(manager, broken, FAILED)
            await manager.unload(broken)
            await manager.reload()
            assert (await manager.states([broken]))[broken].load_state == "not-found"

        self.run(units_dir, scenario, broken)

    def test_loading_a_failed_unit_again_clears_the_failure(self, units_dir: Path) -> None:
        # a unit that failed (or failed while being stopped, after its unload's reset) and is loaded
        # again is a new incarnation: it must not report the old failure before it is started
        broken = self.name("again.service")

        async def scenario(manager: ContractManager) -> None:
            await manager.load(broken, FAILING)
            await manager.reload()
            self.arrange_failing_start(manager, broken)
            await manager.start(broken)
            await state_becomes(manager, broken, FAILED)
            await manager.load(broken, FAILING)
            await manager.reload()
            assert await manager.states([broken]) == {broken: INACTIVE}

        self.run(units_dir, scenario, broken)

    def test_a_unit_systemd_cannot_enable_is_refused_and_removed(self, units_dir: Path) -> None:
        bad = self.name("bad-install.service")

        async def scenario(manager: ContractManager) -> None:
            text = service("bad install", extra="\n[Install]\nWantedBy=nodot\n")
            with pytest.raises(SystemdError, match=f"^Failed to enable systemd unit {bad}: .*nodot"):
                await manager.load(bad, text)
            assert dict(manager.loaded_units()) == {}

        self.run(units_dir, scenario)
        if self.on_disk:
            assert list(units_dir.iterdir()) == []

    def test_stopping_a_unit_systemd_does_not_know_succeeds(self, units_dir: Path) -> None:
        # a unit file left unlinked (a load cut short) must not make every later stop and unload fail
        async def scenario(manager: ContractManager) -> None:
            await manager.stop(self.name("absent.service"))

        self.run(units_dir, scenario)

    def test_a_unit_file_systemd_has_no_link_of_is_unloaded(self, units_dir: Path) -> None:
        # its unload must not fail every time (the agent would retry it forever, holding back other starts)
        left = self.name("left.service")
        self.arrange_left_file(units_dir, left, service("left"))

        async def scenario(manager: ContractManager) -> None:
            assert left in manager.loaded_units()
            await manager.stop(left)
            await manager.unload(left)
            await manager.reload()
            assert dict(manager.loaded_units()) == {}

        self.run(units_dir, scenario)
        if self.on_disk:
            assert list(units_dir.iterdir()) == []

    def test_waiting_for_a_lost_connection_can_be_cancelled_and_the_manager_still_closes(
        self, units_dir: Path
    ) -> None:
        # fleetd cancels the wait at every reload, then closes the manager (run() closes it here)
        async def scenario(manager: ContractManager) -> None:
            waiter = asyncio.ensure_future(manager.lost())
            await asyncio.sleep(0.05)
            assert not waiter.done(), "the connection is not lost"
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)

        self.run(units_dir, scenario)

    def test_starting_an_unknown_unit_raises(self, units_dir: Path) -> None:
        async def scenario(manager: ContractManager) -> None:
            with pytest.raises(SystemdError, match="StartUnit failed"):
                await manager.start(self.name("absent.service"))

        self.run(units_dir, scenario)

    @pytest.mark.parametrize("bad", ["../escape.service", "a/b.service", "noext", "x.unknown"])
    def test_invalid_names_never_touch_the_directory(self, units_dir: Path, bad: str) -> None:
        async def scenario(manager: ContractManager) -> None:
            with pytest.raises(UnitNameError):
                await manager.load(UnitName(bad), service("bad"))
            assert dict(manager.loaded_units()) == {}

        self.run(units_dir, scenario)
        if self.on_disk:
            assert list(units_dir.iterdir()) == []
        assert not (units_dir.parent / "escape.service").exists()


async def _is(value: str | None, want: str) -> bool:
    return value == want


async def _close(iterator: AsyncIterator[UnitName]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
