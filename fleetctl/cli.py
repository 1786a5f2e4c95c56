"""fleetctl's root command: global flags (also from ``FLEETCTL_*``), command prefixes, and the one place where
fleet errors and Ctrl-C become a line on stderr and an exit status."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from fleetctl import completion
from fleetctl.commands import cat, units, verify, version
from fleetctl.commands import list as listing
from fleetctl.commands import remote as remote_commands
from fleetctl.context import App, CommandFailed, GlobalOptions, app_of
from fleetctl.global_flags import FleetCommand, apply_flags, go_bools, root_params
from fleetctl.output import say
from fleetd.errors import FleetError
from fleetd.model import VERSION

__all__ = ["EXIT_INTERRUPTED", "cli", "main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C

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
    """Commands found by unambiguous prefix; FleetError printed as one line with exit status 1 (or 2), Ctrl-C
    as ``Interrupted`` with exit status 130."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        if len(matches) == 1:
            return super().get_command(ctx, matches[0])
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


for _module in (listing, units, cat, verify, version, remote_commands, completion):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``fleetctl`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetctl", obj=App())
