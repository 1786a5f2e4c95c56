"""Ctrl-C anywhere in a command ends fleetctl with one line, ``Interrupted``, and exit status 130."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner

from fleetctl.cli import EXIT_INTERRUPTED, cli
from fleetctl.client import FleetClient
from fleetctl.context import App, GlobalOptions
from tests.unit.fleetctl.conftest import FakeCluster


@contextlib.asynccontextmanager
async def interrupted_connect(_options: GlobalOptions) -> AsyncIterator[FleetClient]:
    """Ctrl-C while connecting (an SSH handshake for --tunnel, say)."""
    raise KeyboardInterrupt
    yield  # pragma: no cover (makes this a generator)


@pytest.mark.parametrize("args", [["list-units"], ["start", "hello.service"], ["--debug=false", "cat", "x"]])
def test_ctrl_c_while_connecting_exits_130(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, obj=App(connect=interrupted_connect), catch_exceptions=False)
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert result.stderr == "Interrupted\n"
    assert "Traceback" not in result.output


def test_ctrl_c_in_a_command_exits_130(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def machines(_client: FleetClient) -> tuple[()]:
        raise KeyboardInterrupt

    monkeypatch.setattr(FleetClient, "machines", machines)
    result = cluster.invoke(["list-machines"])
    assert (result.exit_code, result.stdout, result.stderr) == (130, "", "Interrupted\n")


def test_debug_adds_the_traceback(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def machines(_client: FleetClient) -> tuple[()]:
        raise KeyboardInterrupt

    monkeypatch.setattr(FleetClient, "machines", machines)
    result = cluster.invoke(["--debug", "list-machines"])
    assert result.exit_code == 130
    assert "Traceback" in result.stderr
    assert result.stderr.endswith("\nInterrupted\n")
