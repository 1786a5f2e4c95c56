"""``--watch``: the list is printed again after each change the registry watch reports (no polling), and
Ctrl-C ends it with exit status 130."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from click.testing import CliRunner, Result

from fleetctl.cli import cli
from fleetctl.client import FleetClient, UnitStateRow
from fleetctl.commands.list import CLEAR_SCREEN
from fleetctl.context import App, GlobalOptions
from fleetd.model import MachineState
from tests.unit.fleetctl.conftest import MACHINE_B, FakeCluster, running

pytestmark = pytest.mark.timeout(30)

Step = Callable[[FakeCluster], Awaitable[None]]


class ReadSignallingClient(FleetClient):
    """Puts a token on ``reads`` after every list read, so a driver knows a (re)draw has been decided."""

    def __init__(self, cluster: FakeCluster, reads: asyncio.Queue[None]) -> None:
        super().__init__(cluster.registry)
        self.reads = reads

    async def unit_state_rows(self, *, reasons: bool = False) -> list[UnitStateRow]:
        rows = await super().unit_state_rows(reasons=reasons)
        self.reads.put_nowait(None)
        return rows

    async def machines(self) -> tuple[MachineState, ...]:
        machines = await super().machines()
        self.reads.put_nowait(None)
        return machines


def watch(cluster: FakeCluster, args: list[str], steps: list[Step], *, tty: bool) -> tuple[Result, int]:
    """Run ``args`` (a --watch command); after each read take the next step (a registry change), and after
    the last step's read press Ctrl-C (SIGINT). Returns the result and how many reads there were."""
    reads: asyncio.Queue[None] = asyncio.Queue()
    count = 0

    async def drive() -> None:
        nonlocal count
        for step in [*steps, None]:
            await reads.get()
            count += 1
            if step is None:
                signal.raise_signal(signal.SIGINT)
                return
            await step(cluster)

    @contextlib.asynccontextmanager
    async def connect(_options: GlobalOptions) -> AsyncIterator[FleetClient]:
        driver = asyncio.create_task(drive())
        try:
            yield ReadSignallingClient(cluster, reads)
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver

    app = App(connect=connect, tty=tty, attempt_seconds=0.05)
    result = CliRunner().invoke(cli, args, obj=app, catch_exceptions=False)
    return result, count


def _running(name: str) -> Step:
    async def step(cluster: FakeCluster) -> None:
        state = running(name, "ab" * 20)
        await cluster.registry.publish_state(state, cluster.lease)

    return step


async def _unrelated_then_running(cluster: FakeCluster) -> None:
    """A write under units/ (no wake-up for list-units), then a state: the one wake-up sees the state."""
    await cluster.registry.kv.put(cluster.registry.keys.units + "x.service", "{}")
    await _running("a.service")(cluster)


async def _add_machine(cluster: FakeCluster) -> None:
    await cluster.registry.register_machine(MACHINE_B, cluster.lease)


def test_list_units_watch_prints_a_new_table_after_each_change(cluster: FakeCluster) -> None:
    cluster.agent = False
    result, reads = watch(
        cluster,
        ["list-units", "--watch", "--no-legend"],
        [_running("a.service"), _running("a.service"), _running("b.service")],
        tty=False,
    )
    assert (result.exit_code, result.stderr) == (130, "Interrupted\n")
    assert reads == 4  # the first read, then one per change: the unchanged state re-read but not re-printed
    first = "a.service\t1a2b3c4d.../127.0.0.12\tactive\trunning\n"
    second = first + "b.service\t1a2b3c4d.../127.0.0.12\tactive\trunning\n"
    assert result.stdout == "\n" + first + "\n" + second  # the empty table has no lines


def test_list_units_watch_ignores_changes_elsewhere_in_the_registry(cluster: FakeCluster) -> None:
    cluster.agent = False
    result, reads = watch(cluster, ["list-units", "--watch"], [_unrelated_then_running], tty=False)
    assert result.exit_code == 130
    assert reads == 2
    assert result.stdout.count("UNIT") == 2
    assert "a.service" in result.stdout  # the second read came from the states/ change


def test_list_units_watch_redraws_on_a_terminal(cluster: FakeCluster) -> None:
    cluster.agent = False
    result, _ = watch(cluster, ["list-units", "--watch"], [_running("a.service")], tty=True)
    assert result.exit_code == 130
    screens = result.stdout.split(CLEAR_SCREEN)
    assert screens[0] == ""
    assert screens[1:] == ["UNIT\tMACHINE\tACTIVE\tSUB\n", screens[2]]
    assert screens[2].startswith("UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\na.service\t1a2b3c4d.../127.0.0.12\t")


def test_list_machines_watch_sees_a_machine_join(cluster: FakeCluster) -> None:
    result, _ = watch(cluster, ["list-machines", "--watch", "--no-legend"], [_add_machine], tty=False)
    assert result.exit_code == 130
    one = "1a2b3c4d...\t127.0.0.12\taz=b,role=web\n"
    assert result.stdout == one + "\n" + one + "9f8e7d6c...\t-\t\t-\n"


def test_json_watch_prints_one_document_per_line(cluster: FakeCluster) -> None:
    cluster.agent = False
    result, _ = watch(cluster, ["list-units", "--watch", "-o", "json"], [_running("a.service")], tty=True)
    assert result.exit_code == 130
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith('[{"unit":"a.service","machine_id":"1a2b3c4d5e6f",')
    assert len(lines) == 2
    assert CLEAR_SCREEN not in result.stdout
