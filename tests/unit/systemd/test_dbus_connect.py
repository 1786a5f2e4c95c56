"""Connecting to systemd at start: retried a few times, 1 s doubling apart, then the last error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetd.errors import SystemdError
from fleetd.systemd.dbus import DbusUnitManager


def test_a_bus_that_does_not_answer_is_tried_again_then_its_error_is_raised(tmp_path: Path) -> None:
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    address = f"unix:path={tmp_path / 'no-bus'}"
    with pytest.raises(SystemdError, match="cannot connect to unix:path="):
        asyncio.run(DbusUnitManager.connect_retrying(tmp_path / "units", address, tries=4, sleep=sleep))
    assert waits == [1.0, 2.0, 4.0]
