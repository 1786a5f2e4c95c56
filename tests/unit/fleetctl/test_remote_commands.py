"""status, journal and ssh on a fake cluster with a recording runner: messages, commands sent, exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from fleetctl.cli import FleetGroup, cli
from fleetctl.client import FleetClient
from fleetctl.commands import remote as commands
from fleetctl.context import App, GlobalOptions
from fleetctl.ssh import remote
from fleetd.model import MachineID, MachineState, Rescheduled, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from tests.unit.fleetctl.conftest import MACHINE_A, FakeCluster, running

MACHINE_C = MachineState(MachineID("1a2b99999999"), "127.0.0.13", {})
HELLO = "[Service]\nExecStart=/bin/sleep 100\n"
GLOBAL = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n"


@dataclass
class RecordingRunner:
    """Records each call; answers with the next exit code (0 when none left)."""

    codes: list[int] = field(default_factory=list)
    calls: list[tuple[str, str, tuple[str, ...], int, bool]] = field(default_factory=list)
    made_with: list[tuple[bool, bool]] = field(default_factory=list)

    def _code(self) -> int:
        return self.codes.pop(0) if self.codes else 0

    def run(self, machine: MachineState, argv: Sequence[str], port: int) -> int:
        click.echo(f"ran {' '.join(argv)}")
        self.calls.append(("run", machine.id, tuple(argv), port, False))
        return self._code()

    def run_ssh(self, machine: MachineState, argv: Sequence[str], port: int, forward_agent: bool) -> int:
        self.calls.append(("ssh", machine.id, tuple(argv), port, forward_agent))
        return self._code()

    def shell(self, machine: MachineState, port: int, forward_agent: bool) -> int:
        self.calls.append(("shell", machine.id, (), port, forward_agent))
        return self._code()

    def terminal(self, machine: MachineState, command: str, port: int, forward_agent: bool) -> int:
        self.calls.append(("terminal", machine.id, (command,), port, forward_agent))
        return self._code()

    def factory(
        self, _options: GlobalOptions, forward_agent: bool, forward_stdin: bool
    ) -> contextlib.AbstractContextManager[remote.Runner]:
        self.made_with.append((forward_agent, forward_stdin))
        return contextlib.nullcontext(self)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingRunner]:
    recording = RecordingRunner()
    monkeypatch.setattr(commands, "default_runner", recording.factory)
    yield recording


@pytest.fixture
def fake() -> FakeCluster:
    cluster = FakeCluster(agent=False)
    cluster.add_machines(MACHINE_A, MACHINE_C)
    cluster.submit("hello.service", HELLO, TargetState.LAUNCHED)
    cluster.publish(
        UnitState(
            UnitName("hello.service"), MACHINE_A.id, "loaded", "active", "running", "h", TargetState.LAUNCHED
        )
    )
    cluster.submit("idle.service", HELLO, TargetState.INACTIVE)
    cluster.submit("everywhere.service", GLOBAL, TargetState.LAUNCHED)
    return cluster


# The CLI's own group (one-line FleetError handling) holding just these commands, until cli.py registers them.
GROUP = FleetGroup("fleetctl", commands={command.name or "": command for command in commands.COMMANDS})


def invoke(fake: FakeCluster, command: click.Command, args: list[str]) -> Result:
    assert command.name is not None
    app = App(connect=fake.connect)
    return CliRunner().invoke(GROUP, [command.name, *args], obj=app, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (["nope"], 1, "Unit nope.service does not exist."),
        (["idle.service"], 1, "Unit idle.service does not appear to be loaded."),
        (["everywhere.service"], 1, "Unable to retrieve status of global unit everywhere.service."),
        ([], 2, "No units given"),
    ],
    ids=["unknown unit", "not loaded", "global unit", "no units"],
)
def test_status_refusals(
    fake: FakeCluster, runner: RecordingRunner, args: list[str], code: int, stderr: str
) -> None:
    result = invoke(fake, commands.status, args)
    assert (result.exit_code, result.stderr.strip()) == (code, stderr)
    assert runner.calls == []


def test_status_of_a_unit_no_machine_can_run_says_why(fake: FakeCluster, runner: RecordingRunner) -> None:
    unit = fake.submit("db.service", HELLO, TargetState.LAUNCHED)
    reason = ks.encode_unplaceable(ks.Unplaceable(unit.hash, "no machine has the metadata role=db"))
    fake.run(fake.kv.put(fake.registry.keys.unplaceable_unit("db.service"), reason))
    result = invoke(fake, commands.status, ["db.service"])
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        "Unit db.service does not appear to be loaded."
        " No machine can run it: no machine has the metadata role=db",
    )
    assert runner.calls == []


def test_status_runs_systemctl_on_the_units_machine_and_returns_its_code(
    fake: FakeCluster, runner: RecordingRunner
) -> None:
    runner.codes = [0, 3]
    result = invoke(fake, commands.status, ["hello", "--ssh-port", "2222", "hello.service"])
    assert result.exit_code == 3
    assert (
        result.stdout
        == "ran systemctl status -l -- hello.service\n\nran systemctl status -l -- hello.service\n"
    )
    assert runner.calls[0] == (
        "run",
        MACHINE_A.id,
        ("systemctl", "status", "-l", "--", "hello.service"),
        2222,
        False,
    )


def test_status_stops_at_the_first_failure(fake: FakeCluster, runner: RecordingRunner) -> None:
    runner.codes = [4]
    assert invoke(fake, commands.status, ["hello", "hello"]).exit_code == 4
    assert len(runner.calls) == 1


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        ([], 2, "One unit file must be provided."),
        (["a", "b"], 2, "One unit file must be provided."),
        (["nope"], 1, "Unit nope.service does not exist."),
        (["idle"], 1, "Unit idle.service does not appear to be running."),
        (["everywhere"], 1, "Unable to retrieve journal of global unit everywhere.service."),
    ],
    ids=["no unit", "two units", "unknown unit", "not running", "global unit"],
)
def test_journal_refusals(
    fake: FakeCluster, runner: RecordingRunner, args: list[str], code: int, stderr: str
) -> None:
    result = invoke(fake, commands.journal, args)
    assert (result.exit_code, result.stderr.strip()) == (code, stderr)
    assert runner.calls == []


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["hello"], ("journalctl", "--unit=hello.service", "--no-pager", "-n", "10", "--output=short")),
        (
            ["--lines", "5", "-f", "--sudo", "--output", "json", "hello"],
            (
                "sudo",
                "journalctl",
                "--unit=hello.service",
                "--no-pager",
                "-n",
                "5",
                "--output=json",
                "-f",
            ),
        ),
        (
            ["--follow", "hello"],
            ("journalctl", "--unit=hello.service", "--no-pager", "-n", "10", "--output=short", "-f"),
        ),
    ],
    ids=["defaults", "all flags", "long follow"],
)
def test_journal_command_line(
    fake: FakeCluster, runner: RecordingRunner, args: list[str], argv: tuple[str, ...]
) -> None:
    runner.codes = [1]
    result = invoke(fake, commands.journal, args)
    assert result.exit_code == 1  # journalctl's own exit code
    assert runner.calls == [("run", MACHINE_A.id, argv, 22, False)]


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (
            ["--machine", "1a2b", "--unit", "hello"],
            1,
            "Both machine and unit flags provided, please specify only one.",
        ),
        (["--machine", "1a2b"], 1, "Unable to proceed: found more than one machine"),
        (["--machine", "ffff"], 1, "Unable to proceed: machine does not exist"),
        (["--unit", "nope"], 1, "Unable to proceed: unit does not exist"),
        (["--unit", "everywhere"], 1, "Unable to proceed: global units unsupported"),
        (["--unit", "idle"], 1, "Could not determine address of machine."),
        (["zzz"], 1, "Unable to proceed: could not find matching unit or machine"),
    ],
    ids=[
        "both flags",
        "ambiguous prefix",
        "no such machine",
        "no such unit",
        "global unit",
        "unscheduled unit",
        "nothing matches",
    ],
)
def test_ssh_refusals(
    fake: FakeCluster, runner: RecordingRunner, args: list[str], code: int, stderr: str
) -> None:
    result = invoke(fake, commands.ssh, args)
    assert (result.exit_code, result.stderr.strip()) == (code, stderr)
    assert runner.calls == []


def test_ssh_argument_matching_both_a_machine_and_a_unit_is_ambiguous(
    fake: FakeCluster, runner: RecordingRunner
) -> None:
    fake.submit("1a2b3c.service", HELLO, TargetState.LAUNCHED)
    fake.publish(
        UnitState(
            UnitName("1a2b3c.service"), MACHINE_C.id, "loaded", "active", "running", "h", TargetState.LAUNCHED
        )
    )
    result = invoke(fake, commands.ssh, ["1a2b3c"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "Unable to proceed: ambiguous argument, both machine and unit found for `1a2b3c`."
    )


@pytest.mark.parametrize(
    ("args", "call", "made_with"),
    [
        (["hello.service", "echo", "foo"], ("ssh", MACHINE_A.id, ("echo", "foo"), 22, False), (False, True)),
        (["hello", "--", "ls", "-l"], ("ssh", MACHINE_A.id, ("ls", "-l"), 22, False), (False, True)),
        (["-A", "--ssh-port", "2200", "1a2b3c"], ("shell", MACHINE_A.id, (), 2200, True), (True, False)),
        (["--machine", "1a2b9", "uptime"], ("ssh", MACHINE_C.id, ("uptime",), 22, False), (False, True)),
        (["--unit", "hello", "--", "x; y"], ("ssh", MACHINE_A.id, ("x; y",), 22, False), (False, True)),
        (["--A", "hello"], ("shell", MACHINE_A.id, (), 22, True), (True, False)),
        (["--tunnel", "b", "hello", "true"], ("ssh", MACHINE_A.id, ("true",), 22, False), (False, True)),
        (
            ["hello", "cmd", "--debug=false", "--tunnel", "x"],
            ("ssh", MACHINE_A.id, ("cmd", "--debug=false", "--tunnel", "x"), 22, False),
            (False, True),
        ),
    ],
    ids=[
        "unit with command",
        "double dash",
        "machine prefix shell with agent",
        "machine flag",
        "unit flag",
        "the original's --A",
        "global flag before the target",
        "flags after the target belong to the remote command",
    ],
)
def test_ssh_targets_and_commands(
    fake: FakeCluster,
    runner: RecordingRunner,
    args: list[str],
    call: tuple[str, str, tuple[str, ...], int, bool],
    made_with: tuple[bool, bool],
) -> None:
    runner.codes = [42]
    result = invoke(fake, commands.ssh, args)
    assert result.exit_code == 42
    assert runner.calls == [call]
    assert runner.made_with == [made_with]


@pytest.mark.parametrize("follow", ["-f", "--follow", "--f"])
def test_journal_follow_in_every_spelling(fake: FakeCluster, runner: RecordingRunner, follow: str) -> None:
    assert invoke(fake, commands.journal, [follow, "--lines", "3", "hello"]).exit_code == 0
    argv = runner.calls[0][2]
    assert argv[-1] == "-f" and "3" in argv


class FakeConnection:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, **_kwargs: object) -> int:
        self.commands.append(command)
        return 0

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("words", "sent"),
    [
        (["journalctl -u x | grep err"], "journalctl -u x | grep err"),
        (["ls", "-l", "/run", ">", "/tmp/out"], "ls -l /run > /tmp/out"),
        (["echo", "$HOME"], "echo $HOME"),
    ],
    ids=["one quoted pipeline", "words and a redirection", "a variable for the remote shell"],
)
def test_ssh_sends_the_words_joined_with_spaces_for_the_remote_shell(
    monkeypatch: pytest.MonkeyPatch, words: list[str], sent: str
) -> None:
    from fleetctl.ssh import tunnel  # noqa: PLC0415 (paramiko only where SSH is tested)

    connection = FakeConnection()
    monkeypatch.setattr(tunnel, "connect", lambda *_args, **_kwargs: connection)
    settings = GlobalOptions().ssh_settings(forward_agent=False)
    with remote.SSHRunner(settings) as ssh_runner:
        assert ssh_runner.run_ssh(MACHINE_A, words, 22, False) == 0
        assert ssh_runner.run(MACHINE_A, ["systemctl", "status", "a b"], 22) == 0
    assert connection.commands == [sent, "systemctl status 'a b'"]


def test_ssh_help_keeps_its_usage_lines_and_examples() -> None:
    result = CliRunner().invoke(GROUP, ["ssh", "--help"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "  fleetctl ssh [-A] [--ssh-port N] --unit NAME [--] [COMMAND...]" in lines
    assert "    fleetctl ssh 1a2b3c 'journalctl -u hello.service | grep -i error'" in lines
    assert "joined with spaces and run by the remote shell" in " ".join(result.stdout.split())


def test_quote_command_keeps_every_word_one_word() -> None:
    assert remote.quote_command(["echo", "a b", "$(x)", "it's", ""]) == "echo 'a b' '$(x)' 'it'\"'\"'s' ''"


def _dash_unit(fake: FakeCluster) -> None:
    """A unit whose name looks like an option (written straight to the registry, as any client could)."""
    fake.submit("-H.service", HELLO, TargetState.LAUNCHED)
    fake.publish(
        UnitState(
            UnitName("-H.service"), MACHINE_A.id, "loaded", "active", "running", "h", TargetState.LAUNCHED
        )
    )


def test_status_puts_the_unit_name_after_double_dash(fake: FakeCluster, runner: RecordingRunner) -> None:
    _dash_unit(fake)
    assert invoke(fake, commands.status, ["--", "-H.service"]).exit_code == 0
    argv = runner.calls[0][2]
    assert argv == ("systemctl", "status", "-l", "--", "-H.service")
    assert remote.quote_command(argv) == "systemctl status -l -- -H.service"


def test_journal_glues_the_unit_name_and_output_mode_to_their_options(
    fake: FakeCluster, runner: RecordingRunner
) -> None:
    _dash_unit(fake)
    assert invoke(fake, commands.journal, ["--output", "-x; reboot", "--", "-H.service"]).exit_code == 0
    argv = runner.calls[0][2]
    assert argv == ("journalctl", "--unit=-H.service", "--no-pager", "-n", "10", "--output=-x; reboot")
    assert remote.quote_command(argv) == (
        "journalctl --unit=-H.service --no-pager -n 10 '--output=-x; reboot'"
    )


def test_unit_locations_read_the_unit_states_once(fake: FakeCluster) -> None:
    reads: list[object] = []
    original = fake.registry.list_unit_states

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await original(*args, **kwargs)

    fake.registry.list_unit_states = counted  # type: ignore[method-assign]
    client = FleetClient(fake.registry)
    found = fake.run(client.unit_locations(["hello.service", "idle.service", "nope.service"]))
    assert len(reads) == 1
    hello = found["hello.service"]
    assert hello is not None and hello.machine == MACHINE_A and hello.state is TargetState.LAUNCHED
    idle = found["idle.service"]
    assert idle is not None and idle.machine is None and idle.state is TargetState.INACTIVE
    assert found["nope.service"] is None


def test_status_and_lists_say_what_the_engine_did_after_a_unit_failed(
    fake: FakeCluster, runner: RecordingRunner
) -> None:
    record = fake.run(fake.registry.get_units(["hello.service"]))[UnitName("hello.service")]
    why = "failed on Machine(m2): moved to another machine (reschedule 1 of 3)"
    moved = Rescheduled(record.hash, 1, 1.0, (MachineID("m2"),), why)
    key = fake.registry.keys.rescheduled_unit("hello.service")
    fake.run(fake.kv.put(key, records.encode_rescheduled(moved)))
    fake.publish(running("hello.service", record.hash, MACHINE_A))
    result = invoke(fake, commands.status, ["hello.service"])
    assert result.stdout == f"Unit hello.service: {why}\nran systemctl status -l -- hello.service\n"
    app = App(connect=fake.connect)
    units = CliRunner().invoke(cli, ["list-units", "--no-legend", "--fields", "unit,reason"], obj=app)
    assert units.stdout == f"hello.service\t{why}\n"
    files = CliRunner().invoke(cli, ["list-unit-files", "--no-legend", "--fields", "unit,reason"], obj=app)
    [line] = [line for line in files.stdout.splitlines() if line.startswith("hello.service")]
    assert line.split()[-len(why.split()):] == why.split()
