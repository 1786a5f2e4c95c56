"""status, journal, ssh: the click commands over fleetctl.ssh.remote.

Each command reads what it needs from the cluster first (through ``ctx.obj``'s connector, then the client is
closed), then runs the command on the unit's machine: locally on this machine, else over SSH, through the
``--tunnel`` host when one is set. Refusals print the reference's messages; remote exit codes become ours.

How the SSH side is made can be replaced for tests: ``ctx.obj.remote_runner`` (when the App has one) is a
``RunnerFactory``; without it, ``default_runner`` builds an ``SSHRunner`` from the global options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

import click

from fleetctl.client import FleetClient, UnitLocation
from fleetctl.completion import complete_machines_and_units, complete_units
from fleetctl.context import CommandFailed, GlobalOptions, UsageFailed, app_of, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetctl.ssh import remote
from fleetctl.ssh.config import DEFAULT_SSH_PORT
from fleetctl.ssh.pod import ssh_pod
from fleetctl.ssh.remote import RemoteRefused, Runner
from fleetd.model import MachineState, UnitName
from fleetd.unitfile.names import mangle

__all__ = ["COMMANDS", "RunnerFactory", "default_runner"]

SSH_PORT = click.IntRange(1, 65535)

# (global options, forward the agent?, forward stdin?) -> a runner to use inside a ``with``
RunnerFactory = Callable[[GlobalOptions, bool, bool], AbstractContextManager[Runner]]


def default_runner(options: GlobalOptions, forward_agent: bool, forward_stdin: bool) -> remote.SSHRunner:
    stdin = sys.stdin.buffer if forward_stdin and not sys.stdin.isatty() else None
    return remote.SSHRunner(
        options.ssh_settings(forward_agent),
        options.tunnel,
        local_id=remote.local_machine_id(),
        stdin=stdin,
    )


def _runner(
    ctx: click.Context, forward_agent: bool, forward_stdin: bool = False
) -> AbstractContextManager[Runner]:
    app = app_of(ctx)
    factory: RunnerFactory = getattr(app, "remote_runner", None) or default_runner
    return factory(app.options, forward_agent, forward_stdin)


def _lookup(locations: Mapping[str, UnitLocation | None]) -> remote.Lookup:
    return locations.get


def _exit(ctx: click.Context, code: int) -> None:
    if code:
        ctx.exit(code)


@click.command("status", cls=FleetCommand)
@click.option(
    "--ssh-port", type=SSH_PORT, default=DEFAULT_SSH_PORT, show_default=True, help="SSH port of the machines."
)
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def status(ctx: click.Context, ssh_port: int, units: tuple[str, ...]) -> None:
    """Output the status of one or more units in the cluster.

    Runs `systemctl status -l UNIT` on the machine that has the unit (over SSH, or through --tunnel) and exits
    with its status. Does not work with global units: use `fleetctl ssh MACHINE systemctl status UNIT`.

    \b
    Examples:
      fleetctl status hello.service
      fleetctl status 'hello@*'
      fleetctl status --ssh-port 2222 hello
    """
    if not units:
        raise UsageFailed("No units given")
    names = [mangle(unit) for unit in units]

    async def action(client: FleetClient) -> dict[str, UnitLocation | None]:
        return await client.unit_locations(names)

    locations = run(ctx, action)
    try:
        with _runner(ctx, forward_agent=False) as runner:
            code = remote.status(names, _lookup(locations), runner, ssh_port, say)
    except RemoteRefused as exc:
        raise CommandFailed(str(exc)) from exc
    _exit(ctx, code)


@click.command("journal", cls=FleetCommand)
@click.option(
    "--lines",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Number of recent log lines to return.",
)
@click.option(
    "-f",
    "--follow",
    "--f",
    "follow",
    is_flag=True,
    help="Continuously print new entries as they are appended.",
)
@click.option(
    "--ssh-port", type=SSH_PORT, default=DEFAULT_SSH_PORT, show_default=True, help="SSH port of the machine."
)
@click.option("--sudo", is_flag=True, help="Execute journal command with sudo.")
@click.option(
    "--output", default="short", show_default=True, help="Output mode, passed to journalctl --output."
)
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def journal(  # noqa: PLR0917 (click passes options as keywords)
    ctx: click.Context,
    lines: int,
    follow: bool,
    ssh_port: int,
    sudo: bool,
    output: str,
    units: tuple[str, ...],
) -> None:
    """Print the journal of a unit in the cluster to stdout.

    Runs journalctl for the unit on the machine that has it (over SSH, or through --tunnel). Does not work
    with global units. With --follow, Ctrl-C ends it (exit 130).

    \b
    Examples:
      fleetctl journal hello.service              # the last 10 lines
      fleetctl journal --lines 100 hello
      fleetctl journal -f hello@1                  # follow (also --follow, --f)
      fleetctl journal --sudo --output json-pretty hello
    """
    if len(units) != 1:
        raise UsageFailed("One unit file must be provided.")
    name = mangle(units[0])

    async def action(client: FleetClient) -> dict[str, UnitLocation | None]:
        return await client.unit_locations([name])

    locations = run(ctx, action)
    try:
        with _runner(ctx, forward_agent=False) as runner:
            code = remote.journal(
                name,
                _lookup(locations),
                runner,
                ssh_port,
                lines=lines,
                output=output,
                follow=follow,
                sudo=sudo,
            )
    except RemoteRefused as exc:
        raise CommandFailed(str(exc)) from exc
    except KeyboardInterrupt:  # the usual end of `journal -f`
        code = 130
    _exit(ctx, code)


@click.command(
    "ssh",
    cls=FleetCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--machine", default="", help="Open SSH connection to a specific machine.")
@click.option("--unit", default="", help="Open SSH connection to machine running provided unit.")
@click.option(
    "--pod",
    default="",
    metavar="UNIT",
    shell_complete=complete_units,
    help="Open a shell in the pod (systemd-nspawn container) that UNIT runs, on its machine.",
)
@click.option(
    "-A",
    "--forward-agent",
    "--A",
    "forward_agent",
    is_flag=True,
    help="Forward local ssh-agent to target machine.",
)
@click.option(
    "--ssh-port", type=SSH_PORT, default=DEFAULT_SSH_PORT, show_default=True, help="SSH port of the machine."
)
@click.argument(
    "args",
    nargs=-1,
    type=click.UNPROCESSED,
    metavar="[MACHINE|UNIT] [--] [COMMAND...]",
    shell_complete=complete_machines_and_units,
)
@click.pass_context
def ssh(  # noqa: PLR0917 (click passes options as keywords)
    ctx: click.Context,
    machine: str,
    unit: str,
    pod: str,
    forward_agent: bool,
    ssh_port: int,
    args: tuple[str, ...],
) -> None:
    """Open interactive shell on a machine in the cluster, or run a command there.

    \b
    fleetctl ssh [-A] [--ssh-port N] MACHINE|UNIT [--] [COMMAND...]
    fleetctl ssh [-A] [--ssh-port N] --machine ID [--] [COMMAND...]
    fleetctl ssh [-A] [--ssh-port N] --unit NAME [--] [COMMAND...]
    fleetctl ssh [-A] [--ssh-port N] --pod UNIT [--] [COMMAND...]

    MACHINE is a machine ID or a unique prefix of one; UNIT a unit name (its machine is used). An argument
    that names both is refused: say which with --machine or --unit.

    COMMAND's words are joined with spaces and run by the remote shell, as fleet and ssh(1) do: pipes,
    redirections and variables work there; quote them to keep them from the local shell. Options after the
    target belong to COMMAND. Without COMMAND: an interactive shell.

    --pod: inside the unit's pod (its ExecStart runs systemd-nspawn; the pod is the --machine= name there,
    specifiers expanded): `machinectl shell` for a booted pod, `nsenter` into an application pod; COMMAND
    is run by the pod's /bin/sh. Needs root on the machine (or polkit rules that allow it).

    \b
    Examples:
      fleetctl ssh 1a2b3c 'journalctl -u hello.service | grep -i error'
      fleetctl ssh hello.service -- ls -l /run/fleet
      fleetctl ssh -A --unit hello.service
      echo data | fleetctl ssh --machine 1a2b3c 'cat > /tmp/data'
      fleetctl ssh --pod app-pod@1.service 'ps; hostname'
    """
    if pod:
        if machine or unit:
            raise UsageFailed("Use only one of --machine, --unit and --pod.")
        _ssh_pod(ctx, mangle(pod), list(args), forward_agent, ssh_port)
        return
    words = list(args)
    target = "" if machine or unit else (words.pop(0) if words else "")
    if words[:1] == ["--"]:
        words = words[1:]
    wanted = mangle(unit or target) if (unit or target) else ""

    async def action(client: FleetClient) -> tuple[tuple[MachineState, ...], dict[str, UnitLocation | None]]:
        machines = await client.machines()
        return machines, (await client.unit_locations([wanted]) if wanted else {})

    machines, locations = run(ctx, action)

    def lookup(name: str) -> UnitLocation | None:  # ssh takes unit names as typed: mangle them here
        return locations.get(mangle(name))

    try:
        with _runner(ctx, forward_agent, forward_stdin=bool(words)) as runner:
            code = remote.ssh(
                target,
                words,
                machine=machine,
                unit=unit,
                machines=machines,
                lookup=lookup,
                runner=runner,
                port=ssh_port,
                forward_agent=forward_agent,
            )
    except RemoteRefused as exc:
        raise CommandFailed(str(exc)) from exc
    _exit(ctx, code)


def _ssh_pod(ctx: click.Context, name: str, words: list[str], forward_agent: bool, ssh_port: int) -> None:
    if words[:1] == ["--"]:
        words = words[1:]

    async def action(client: FleetClient) -> tuple[dict[str, UnitLocation | None], str | None]:
        records = await client.units([name])
        record = records.get(UnitName(name))
        body = await client.body(record) if record is not None else None
        return await client.unit_locations([name]), body

    locations, body = run(ctx, action)
    try:
        with _runner(ctx, forward_agent, forward_stdin=bool(words)) as runner:
            code = ssh_pod(
                name, body, words, lookup=_lookup(locations), runner=runner, port=ssh_port,
                forward_agent=forward_agent,
            )
    except RemoteRefused as exc:
        raise CommandFailed(str(exc)) from exc
    _exit(ctx, code)


COMMANDS = (status, journal, ssh)
