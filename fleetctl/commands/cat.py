"""cat: print a unit's stored (canonical) text."""

from __future__ import annotations

import click

from fleetctl.client import FleetClient
from fleetctl.completion import complete_units
from fleetctl.context import CommandFailed, UsageFailed, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.model import UnitName
from fleetd.unitfile.names import mangle

__all__ = ["COMMANDS"]


@click.command("cat", cls=FleetCommand)
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def cat(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Output the contents of a submitted unit.

    Prints the unit file as the cluster stores it (its canonical text: the unit's hash is computed from it),
    which may differ in spacing and comments from the file that was submitted.

    \b
    Examples:
      fleetctl cat hello.service
      fleetctl cat hello@1          # an instance prints its template's text
    """
    if len(units) != 1:
        raise UsageFailed("One unit file must be provided")
    name = mangle(units[0])

    async def action(client: FleetClient) -> str:
        record = (await client.units([name])).get(UnitName(name))
        body = await client.body(record) if record is not None else None
        if body is None:
            raise CommandFailed(f"Unit {name} not found")
        return body

    say(run(ctx, action), nl=False)  # control characters made visible: the body is registry data


COMMANDS = (cat,)
