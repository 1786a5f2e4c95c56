"""Shell completion: ``fleetctl completion bash|zsh|fish`` prints the script (click's), and the answers the
script asks fleetctl for as the user presses TAB.

Unit arguments complete with the unit names in the cluster (read with the global options on the command
line and in ``FLEETCTL_*``, within two seconds; nothing when etcd does not answer). Arguments that may be
local unit files (submit, load, start, verify) keep file-name completion: zsh and fish offer both, bash
offers the matching unit names and falls back to file names when none match. ``ssh``'s first argument
completes with machine IDs and unit names.

With ``--tunnel`` the cluster is not asked: an SSH connection could prompt (host key, passphrase) in the
middle of the command line. File names still complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem, get_completion_class

from fleetctl.client import FleetClient
from fleetctl.context import GlobalOptions, app_of
from fleetctl.global_flags import GLOBAL_NAMES, FleetCommand, apply_flags
from fleetd.errors import FleetError

__all__ = [
    "COMMANDS",
    "complete_files",
    "complete_machines_and_units",
    "complete_units",
    "complete_units_or_files",
]

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_FLEETCTL_COMPLETE"  # click's variable for the program name "fleetctl"
LOOKUP_SECONDS = 2.0


def _options(ctx: click.Context) -> GlobalOptions:
    """The global options as the command being completed would get them (completion parses resiliently and
    runs no callbacks, so the root's own callback has not applied them)."""
    root = ctx.find_root()
    options = apply_flags(root.params, app_of(ctx).options)
    given = {
        name: value
        for name, value in ctx.params.items()
        if name in GLOBAL_NAMES and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    return apply_flags(given, options)


def _ask_cluster(ctx: click.Context, read: Callable[[FleetClient], Awaitable[list[str]]]) -> list[str]:
    try:
        options = _options(ctx)
    except FleetError:
        return []
    if options.tunnel:
        return []
    connect = app_of(ctx).connect

    async def body() -> list[str]:
        async with asyncio.timeout(LOOKUP_SECONDS), connect(options) as client:
            return await read(client)

    try:
        return asyncio.run(body())
    except (FleetError, TimeoutError, OSError):
        return []


async def _unit_names(client: FleetClient) -> list[str]:
    return sorted(record.name for record in await client.all_units())


async def _machines_and_units(client: FleetClient) -> list[str]:
    return sorted(machine.id for machine in await client.machines()) + await _unit_names(client)


def complete_units(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in _ask_cluster(ctx, _unit_names) if name.startswith(incomplete)]


def complete_files(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(incomplete, type="file")]


def complete_units_or_files(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    # The file item first: bash then shows the unit names when any match, and file names otherwise.
    units = [] if "/" in incomplete else complete_units(ctx, param, incomplete)
    return [*complete_files(ctx, param, incomplete), *units]


def complete_machines_and_units(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    if ctx.params.get("args") or ctx.params.get("machine") or ctx.params.get("unit"):
        return []  # the target is given: the rest is the remote command
    names = _ask_cluster(ctx, _machines_and_units)
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


@click.command("completion", cls=FleetCommand)
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    Commands, flags and unit names (read from the cluster) complete on TAB; arguments that may be unit files
    (submit, load, start, verify) complete file names too.

    \b
    Examples:
      eval "$(fleetctl completion bash)"       # in ~/.bashrc
      eval "$(fleetctl completion zsh)"        # in ~/.zshrc, after compinit
      fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish
      fleetctl completion bash | sudo tee /etc/bash_completion.d/fleetctl
    """
    root = ctx.find_root().command
    script_class = get_completion_class(shell)
    assert script_class is not None  # click ships all three of SHELLS
    click.echo(script_class(root, {}, "fleetctl", COMPLETE_VAR).source())


COMMANDS = (completion,)
