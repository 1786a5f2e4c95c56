"""fleetctl's root command: global flags (also from ``FLEETCTL_*``), command prefixes, and the one place where
fleet errors and Ctrl-C become a line on stderr and an exit status."""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import click

from fleetctl.context import App, CommandFailed, GlobalOptions, app_of
from fleetctl.global_flags import FleetCommand, apply_flags, go_bools, root_params
from fleetctl.output import say
from fleetd.errors import FleetError
from fleetd.model import VERSION

__all__ = ["COMMAND_MODULES", "EXIT_INTERRUPTED", "cli", "main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C

# Each command: the module that defines it (in its COMMANDS) and its one-line help. A command's module is
# imported only when that command runs or completes, and the command list in the help is drawn from here, so
# `fleetctl help` and `fleetctl version` load neither the cluster client nor SSH (test_startup_imports keeps
# these lines equal to the commands' own help).
COMMAND_MODULES: Mapping[str, tuple[str, str]] = {
    "cat": ("fleetctl.commands.cat", "Output the contents of a submitted unit."),
    "completion": ("fleetctl.completion", "Print the shell completion script for SHELL (bash, zsh or fish)."),
    "dashboard": (
        "fleetctl.commands.dashboard",
        "Serve a live web dashboard of the cluster on this machine until Ctrl-C.",
    ),
    "destroy": (
        "fleetctl.commands.units",
        "Destroy one or more units in the cluster; waits until no machine runs them (unless --no-block).",
    ),
    "drain": (
        "fleetctl.commands.machines",
        "Mark a machine unschedulable and move its units to other machines; waits until they are up there.",
    ),
    "journal": ("fleetctl.commands.remote", "Print the journal of a unit in the cluster to stdout."),
    "list-machines": ("fleetctl.commands.list", "Enumerate the current hosts in the cluster."),
    "list-unit-files": ("fleetctl.commands.list", "List the units that exist in the cluster."),
    "list-units": ("fleetctl.commands.list", "List the current state of units in the cluster."),
    "load": (
        "fleetctl.commands.units",
        "Schedule one or more units in the cluster, first submitting them if necessary.",
    ),
    "rolling-update": (
        "fleetctl.commands.rollout",
        "Give running units a new unit file, a few at a time, rolling back on failure.",
    ),
    "plan": (
        "fleetctl.commands.plan",
        "Print what the engine would do if FILE... were started now; writes nothing.",
    ),
    "reset-metadata": (
        "fleetctl.commands.metadata",
        "Drop live metadata of a machine, back to its fleet.conf values; prints the units that move.",
    ),
    "restart": (
        "fleetctl.commands.units",
        "Restart one or more units in the cluster: stop each (waiting until it is loaded), then start it.",
    ),
    "set-metadata": (
        "fleetctl.commands.metadata",
        "Set metadata on a machine live (kept across fleetd restarts); prints the units that move.",
    ),
    "ssh": (
        "fleetctl.commands.remote",
        "Open interactive shell on a machine in the cluster, or run a command there.",
    ),
    "start": (
        "fleetctl.commands.units",
        "Instruct systemd to start one or more units, first submitting and loading them if necessary.",
    ),
    "status": ("fleetctl.commands.remote", "Output the status of one or more units in the cluster."),
    "stop": ("fleetctl.commands.units", "Instruct systemd to stop one or more units in the cluster."),
    "submit": ("fleetctl.commands.units", "Upload one or more units to the cluster without starting them."),
    "uncordon": ("fleetctl.commands.machines", "Make a drained (cordoned) machine schedulable again."),
    "unset-metadata": (
        "fleetctl.commands.metadata",
        "Remove metadata keys from a machine live (configured ones too); prints the units that move.",
    ),
    "unload": ("fleetctl.commands.units", "Unschedule one or more units in the cluster."),
    "verify": (
        "fleetctl.commands.verify",
        "Check unit files (syntax, name, [X-Fleet] options) and print their short hashes.",
    ),
    "version": ("fleetctl.commands.version", "Print the version and exit."),
}

ROOT_HELP = """fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system.

Every global option can be set in the environment (FLEETCTL_ENDPOINT, FLEETCTL_TUNNEL, ...; named below) and
given before or after the command. 'fleetctl help COMMAND' (or COMMAND --help) describes a command, with
examples; 'fleetctl completion bash|zsh|fish' prints a shell completion script.

\b
Examples:
  fleetctl --endpoint http://10.0.0.1:2379 list-machines
  fleetctl start 'hello@*'
  fleetctl list-units --tunnel 10.0.0.1
  eval "$(fleetctl completion bash)"
"""


class FleetGroup(click.Group):
    """Commands found by unambiguous prefix, ``lazy`` ones (name -> (module, short help)) imported on first
    use; FleetError printed as one line with exit status 1 (or 2), Ctrl-C as ``Interrupted`` with exit
    status 130."""

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def _command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module = importlib.import_module(self.lazy[name][0])
            for command in module.COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self._command(ctx, cmd_name)
        if command is not None:
            return command
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        if len(matches) == 1:
            return self._command(ctx, matches[0])
        if len(matches) > 1 and not ctx.resilient_parsing:  # completing: no error mid-line
            ctx.fail(f"ambiguous command {cmd_name!r}: could be {', '.join(sorted(matches))}")
        return None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, go_bools(args, self.params, interspersed=False))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = [
            record
            for param in self.get_params(ctx)
            if isinstance(param, click.Option) and (record := param.get_help_record(ctx)) is not None
        ]
        with formatter.section("Global options (also accepted after the command)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, with the short help of commands not imported yet taken from ``lazy``."""
        names = [
            name for name in self.list_commands(ctx) if name in self.lazy or not self.commands[name].hidden
        ]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (
                name,
                self.commands[name].get_short_help_str(limit)
                if name in self.commands
                else click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit),
            )
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            app = app_of(ctx)
            if app.options.debug:
                click.echo(traceback.format_exc().rstrip("\n"), err=True)
            if isinstance(exc, CommandFailed):
                say(str(exc), err=True)
                ctx.exit(exc.exit_code)
            say(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            # Ctrl-C anywhere in a command: a wait, a --watch, an SSH handshake or session. asyncio.run has
            # already cancelled the command's task (its cleanup ran: progress line cleared, tunnel closed);
            # click's own handler would print "Aborted!" and exit 1.
            if app_of(ctx).options.debug:
                click.echo(traceback.format_exc().rstrip("\n"), err=True)
            closes_echo = "\n" if sys.stderr.isatty() else ""  # the terminal echoed "^C" with no newline
            click.echo(f"{closes_echo}Interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(
    cls=FleetGroup,
    invoke_without_command=True,
    help=ROOT_HELP,
    epilog=f"VERSION: {VERSION}",
    params=root_params(),
    lazy=COMMAND_MODULES,
    context_settings={"help_option_names": ["-h", "--h", "--help"]},
)
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    app = ctx.ensure_object(App)
    app.options = apply_flags(flags, GlobalOptions())
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("help", cls=FleetCommand, context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Help about any command."""
    root = ctx.parent
    assert root is not None and isinstance(root.command, FleetGroup)
    if not command:
        click.echo(root.get_help())
        return
    sub = root.command.get_command(root, command[0])
    if sub is None:
        raise click.UsageError(f"unknown help topic {command[0]!r}", ctx)
    with click.Context(sub, info_name=sub.name, parent=root) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


def main(argv: Sequence[str] | None = None) -> None:
    """The ``fleetctl`` console script."""
    # When the process ends, its objects are frozen first: the interpreter's teardown then does not walk
    # them all with the cyclic collector again (measured: 15-20 ms of a cold list-units of 10,000 units).
    # Exit handlers and flushes still run and modules are still torn down; only cyclic garbage is left
    # unreclaimed, which the interpreter does not promise to finalize at exit anyway. Registered once.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetctl", obj=App())
