"""verify: check unit files offline (DESIGN.md §7 item 9); the checks live in fleetctl.verify."""

from __future__ import annotations

import click

from fleetctl.completion import complete_files
from fleetctl.context import UsageFailed
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say

__all__ = ["COMMANDS"]


@click.command("verify", cls=FleetCommand)
@click.option("--canonical", is_flag=True, help="Print each file's canonical text.")
@click.argument("files", nargs=-1, shell_complete=complete_files)
@click.pass_context
def verify(ctx: click.Context, canonical: bool, files: tuple[str, ...]) -> None:
    """Check unit files (syntax, name, [X-Fleet] options) and print their short hashes.

    Works offline: nothing is read from or written to the cluster. Errors name the file and line.

    \b
    Examples:
      fleetctl verify hello.service
      fleetctl verify units/*.service
      fleetctl verify --canonical hello.service      # the text the cluster would store
    """
    if not files:
        raise UsageFailed("No unit files given")
    from fleetctl.verify import verify_paths  # noqa: PLC0415

    report = verify_paths(list(files), canonical)
    for line in report.lines:
        say(line.text, err=line.is_error)
    ctx.exit(report.exit_code)


COMMANDS = (verify,)
