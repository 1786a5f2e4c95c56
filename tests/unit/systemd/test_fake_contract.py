"""The UnitManager contract on FakeUnitManager, plus the fake's own test controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from fleetd.errors import SystemdError
from fleetd.model import UnitName
from fleetd.systemd.fake import FakeUnitManager
from fleetd.systemd.protocol import UnitManager
from tests.contract.unit_manager_contract import (
    FAILED,
    RUNNING,
    ContractManager,
    UnitManagerContract,
    service,
)


class TestFakeUnitManagerContract(UnitManagerContract):
    on_disk = False

    @pytest.fixture(autouse=True)
    def _directories(self) -> None:
        self._left: dict[Path, FakeUnitManager] = {}

    @asynccontextmanager
    async def open_manager(self, units_directory: Path) -> AsyncIterator[ContractManager]:
        earlier = self._left.get(units_directory)
        manager = FakeUnitManager(earlier.files() if earlier else None)
        try:
            yield manager
        finally:
            await manager.close()
            self._left[units_directory] = manager

    def arrange_failing_start(self, manager: ContractManager, name: UnitName) -> None:
        assert isinstance(manager, FakeUnitManager)
        manager.fail_start(name)

    def arrange_left_file(self, units_dir: Path, name: UnitName, text: str) -> None:
        earlier = self._left.get(units_dir)
        self._left[units_dir] = FakeUnitManager({**(earlier.files() if earlier else {}), name: text})


HELLO = UnitName("hello.service")


def test_the_fake_is_a_unit_manager() -> None:
    manager: UnitManager = FakeUnitManager()
    assert manager.loaded_units() == {}


def test_calls_are_recorded_and_states_are_one_call() -> None:
    async def main() -> FakeUnitManager:
        manager = FakeUnitManager()
        await manager.load(HELLO, service("hello"))
        await manager.reload()
        await manager.start(HELLO)
        await manager.states([HELLO, UnitName("other.service")])
        return manager

    manager = asyncio.run(main())
    assert manager.calls == [
        ("load", "hello.service"),
        ("reload",),
        ("start", "hello.service"),
        ("states", "hello.service", "other.service"),
    ]
    assert manager.reloads == 1
    assert not manager.pending_reload


def test_fail_next_raises_once_for_that_unit_only() -> None:
    async def main() -> None:
        manager = FakeUnitManager({HELLO: service("hello"), UnitName("b.service"): service("b")})
        manager.fail_next("start", HELLO, "boom")
        await manager.start(UnitName("b.service"))
        with pytest.raises(SystemdError, match=r"^StartUnit failed: boom$"):
            await manager.start(HELLO)
        await manager.start(HELLO)
        assert (await manager.states([HELLO]))[HELLO] == RUNNING

    asyncio.run(main())


def test_a_failed_load_leaves_no_file() -> None:
    async def main() -> None:
        manager = FakeUnitManager()
        manager.fail_next("load")
        with pytest.raises(SystemdError):
            await manager.load(HELLO, service("hello"))
        assert manager.loaded_units() == {}

    asyncio.run(main())


def test_crash_marks_the_unit_failed_and_reports_it() -> None:
    async def main() -> None:
        manager = FakeUnitManager({HELLO: service("hello")})
        await manager.start(HELLO)
        changes = manager.changes()
        waiter = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0)
        manager.crash(HELLO)
        assert await asyncio.wait_for(waiter, 1) == HELLO
        assert (await manager.states([HELLO]))[HELLO] == FAILED
        await changes.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())


def test_unknown_method_cannot_be_made_to_fail() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        FakeUnitManager().fail_next("explode")
