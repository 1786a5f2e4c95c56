"""Help (descriptions with examples, global options with their variables) and shell completion (the scripts,
and the unit names and files they complete)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from fleetctl.cli import COMMAND_MODULES, cli
from fleetctl.client import FleetClient
from fleetctl.context import App, GlobalOptions
from fleetd.errors import RegistryUnavailable
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, FakeCluster

COMMANDS_WITH_EXAMPLES = sorted((set(cli.commands) | set(COMMAND_MODULES)) - {"help", "version"})


def help_of(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, obj=App(), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS_WITH_EXAMPLES)
def test_every_command_describes_itself_with_examples_kept_on_their_lines(command: str) -> None:
    text = help_of([command, "--help"])
    lines = text.splitlines()
    assert "  Examples:" in lines
    examples = [line for line in lines if line.startswith("    fleetctl ") or "| fleetctl" in line]
    assert examples, text
    assert all(f"fleetctl {command}" in line for line in examples if "fleetctl" in line)
    assert text == help_of(["help", command])


def test_start_help_shows_the_glob_example_and_the_failure_behaviour() -> None:
    text = help_of(["start", "--help"])
    assert "    fleetctl start 'hello@*'" in text
    assert "fleetctl journal UNIT" in " ".join(text.split())
    assert "--timeout DURATION" in text


@pytest.mark.parametrize("args", [["--help"], ["list-units", "--help"]])
def test_global_options_are_listed_with_their_variables(args: list[str]) -> None:
    text = help_of(args)
    assert "Global options" in text
    flat = " ".join(text.split())
    for variable in ("FLEETCTL_ENDPOINT", "FLEETCTL_TUNNEL", "FLEETCTL_SSH_USERNAME", "FLEETCTL_CA_FILE"):
        assert f"env var: {variable}" in flat
    assert "--etcd-keyfile" not in text  # deprecated aliases stay hidden


def test_command_options_and_global_options_are_separate_sections() -> None:
    text = help_of(["journal", "--help"])
    own, shared = text.split("Global options")
    assert "--lines" in own and "--lines" not in shared
    assert "--endpoint" in shared and "--endpoint" not in own


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_fleetctl(shell: str) -> None:
    text = help_of(["completion", shell])
    assert "_FLEETCTL_COMPLETE" in text
    assert f"{shell}_complete" in text


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"], obj=App())
    assert result.exit_code == 2


@pytest.fixture
def fake() -> FakeCluster:
    cluster = FakeCluster(agent=False)
    cluster.add_machines(MACHINE_A)
    cluster.submit("hello.service", HELLO)
    cluster.submit("hello@.service", HELLO)
    cluster.submit("web.service", HELLO)
    return cluster


def complete(fake: FakeCluster | None, args: list[str], incomplete: str) -> list[tuple[str, str]]:
    app = App(connect=fake.connect) if fake is not None else App(connect=_unreachable)
    completer = ShellComplete(cli, {"obj": app}, "fleetctl", "_FLEETCTL_COMPLETE")
    return [(item.value, item.type) for item in completer.get_completions(args, incomplete)]


@asynccontextmanager
async def _unreachable(_options: GlobalOptions) -> AsyncIterator[FleetClient]:
    raise RegistryUnavailable("no etcd")
    yield  # pragma: no cover


@pytest.mark.parametrize(
    ("args", "incomplete", "expected"),
    [
        (["status"], "he", [("hello.service", "plain"), ("hello@.service", "plain")]),
        (["journal"], "w", [("web.service", "plain")]),
        (["--endpoint", "http://e:1", "destroy", "hello.service"], "w", [("web.service", "plain")]),
        (["start"], "w", [("w", "file"), ("web.service", "plain")]),
        (["submit"], "units/w", [("units/w", "file")]),
        (["verify"], "he", [("he", "file")]),
        (
            ["ssh"],
            "",
            [
                ("1a2b3c4d5e6f", "plain"),
                *((n, "plain") for n in ("hello.service", "hello@.service", "web.service")),
            ],
        ),
        (["ssh", "web.service"], "", []),
        (["list-machines"], "", []),
        ([], "list-unit", [("list-unit-files", "plain"), ("list-units", "plain")]),
    ],
    ids=[
        "status: unit names",
        "journal: unit names",
        "after global flags and a first unit",
        "start: files and unit names",
        "a path: files only",
        "verify: files only",
        "ssh: machines and units",
        "ssh: after the target, nothing",
        "a command without arguments",
        "command names",
    ],
)
def test_completion_answers(
    fake: FakeCluster, args: list[str], incomplete: str, expected: list[tuple[str, str]]
) -> None:
    assert complete(fake, args, incomplete) == expected


def test_completion_after_an_ambiguous_prefix_is_no_error(fake: FakeCluster) -> None:
    assert ("list-units", "plain") in complete(fake, ["list-"], "")


def test_completion_without_etcd_or_through_a_tunnel_keeps_file_names(fake: FakeCluster) -> None:
    assert complete(None, ["status"], "he") == []
    assert complete(None, ["start"], "he") == [("he", "file")]
    assert complete(fake, ["--tunnel", "bastion", "start"], "he") == [("he", "file")]
    assert complete(fake, ["status", "--tunnel", "bastion"], "he") == []
