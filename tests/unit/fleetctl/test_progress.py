"""The progress line of blocking commands: on a terminal one line redrawn in place with what the wait is at
and the time taken (one unit too), erased at the end; without a terminal nothing but the original's lines."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner

from fleetctl.cli import cli
from fleetctl.client import FleetClient, Goal
from fleetctl.commands.blocking import ERASE_LINE, progress_line
from fleetctl.context import App, GlobalOptions
from fleetd.model import MachineID, TargetState, UnitName, UnitState
from tests.unit.fleetctl.conftest import HELLO, FakeCluster, running

pytestmark = pytest.mark.timeout(30)

WIDE = {"COLUMNS": "200"}
PROGRESS = re.compile(r"\r\x1b\[K(waiting for [^\r\n]*)?")  # a drawn line, or the bare erase


@pytest.fixture
def hello(cluster: FakeCluster) -> FakeCluster:
    cluster.submit("hello.service", HELLO)
    return cluster


def _activating(name: str, unit_hash: str = "h") -> UnitState:
    machine = MachineID("1a2b3c4d5e6f")
    return UnitState(
        UnitName(name), machine, "loaded", "activating", "start", unit_hash, TargetState.LAUNCHED
    )


LAUNCH = Goal("hello.service", TargetState.LAUNCHED, active=True)


@pytest.mark.parametrize(
    ("pending", "done", "total", "latest", "expected"),
    [
        (
            [LAUNCH],
            0,
            1,
            {"hello.service": [_activating("hello.service")]},
            "waiting for hello.service: launched on 1a2b3c4d, systemd activating/start (3.2s)",
        ),
        ([LAUNCH], 0, 1, {}, "waiting for hello.service: no state reported yet (3.2s)"),
        (
            [Goal("b@2.service", TargetState.LOADED), Goal("b@1.service", TargetState.LOADED)],
            1,
            3,
            {"b@1.service": [running("b@1.service", "h")]},
            "waiting for b@1.service (1/3 done): launched on 1a2b3c4d, systemd active/running (3.2s)",
        ),
        (
            [LAUNCH],
            0,
            1,
            {
                "hello.service": [
                    UnitState(UnitName("hello.service"), MachineID("1a2b3c4d5e6f"), "", "", "", "")
                ]
            },
            "waiting for hello.service: loaded on 1a2b3c4d, systemd -/- (3.2s)",
        ),
        (
            [Goal("hello.service", TargetState.LAUNCHED, "cd" * 20, active=True)],
            0,
            1,
            {"hello.service": [running("hello.service", "ab" * 20)]},
            "waiting for hello.service: launched on 1a2b3c4d, systemd active/running,"
            " older version abababa (3.2s)",
        ),
        (
            [Goal("hello.service", TargetState.LAUNCHED, "cd" * 20, active=True)],
            0,
            1,
            {"hello.service": [running("hello.service", "ab" * 20), _activating("hello.service", "cd" * 20)]},
            "waiting for hello.service: launched on 1a2b3c4d, systemd activating/start (3.2s)",
        ),
    ],
    ids=[
        "one unit activating",
        "nothing reported",
        "first pending of several",
        "systemd states unknown",
        "another version runs",
        "the version waited for is preferred",
    ],
)
def test_progress_line(
    pending: list[Goal], done: int, total: int, latest: dict[str, list[UnitState]], expected: str
) -> None:
    assert progress_line(pending, done, total, latest, 3.21) == expected


def test_one_unit_shows_its_state_and_elapsed_time(hello: FakeCluster) -> None:
    hello.stuck_activating.add("hello.service")
    result = hello.invoke(["start", "--timeout", "0.6", "hello"], tty=True, env=WIDE)
    assert result.exit_code == 1
    lines = re.findall(
        r"waiting for hello\.service: launched on 1a2b3c4d, systemd activating/start \((\d+\.\d)s\)",
        result.stdout,
    )
    assert len(set(lines)) >= 2  # the elapsed time moves while nothing changes
    assert result.stdout.endswith(ERASE_LINE)  # the line is gone before the error
    assert result.stderr.startswith("Error waiting for units: timed out waiting for unit hello.service")


def test_a_terminal_sees_the_lines_of_a_script_and_the_progress_line(hello: FakeCluster) -> None:
    plain = hello.invoke(["start", "hello"])
    assert hello.invoke(["unload", "hello"]).exit_code == 0
    tty = hello.invoke(["start", "hello"], tty=True, env=WIDE)
    assert (plain.exit_code, tty.exit_code) == (0, 0)
    assert "\x1b" not in plain.stdout
    assert "waiting for" not in plain.stdout
    assert PROGRESS.sub("", tty.stdout) == plain.stdout


def test_the_line_fits_the_terminal(hello: FakeCluster) -> None:
    hello.stuck_activating.add("hello.service")
    result = hello.invoke(["start", "--timeout", "0.3", "hello"], tty=True, env={"COLUMNS": "30"})
    drawn = [line for line in PROGRESS.findall(result.stdout) if line]
    assert drawn
    assert all(len(line) == 29 for line in drawn)


def test_ctrl_c_during_a_wait_erases_the_line_and_exits_130(hello: FakeCluster) -> None:
    hello.stuck_activating.add("hello.service")

    @contextlib.asynccontextmanager
    async def connect(options: GlobalOptions) -> AsyncIterator[FleetClient]:
        async def press_ctrl_c() -> None:
            await asyncio.sleep(0.3)
            signal.raise_signal(signal.SIGINT)

        interrupt = asyncio.create_task(press_ctrl_c())
        async with hello.connect(options) as client:
            yield client
        interrupt.cancel()

    app = App(connect=connect, tty=True)
    result = CliRunner().invoke(cli, ["start", "hello"], obj=app, env=WIDE, catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (130, "Interrupted\n")
    assert "waiting for hello.service: launched on 1a2b3c4d" in result.stdout
    assert result.stdout.endswith(ERASE_LINE)
