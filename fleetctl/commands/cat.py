"""cat: print a unit's stored (canonical) text."""

from __future__ import annotations

import click

from fleetctl.client import FleetClient
from fleetctl.context import CommandFailed, UsageFailed, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.model import UnitName
from fleetd.unitfile.names import mangle

__all__ = ["COMMANDS"]


@click.command("cat", cls=FleetCommand)
@click.argument("units", nargs=-1)
@click.pass_context
def cat(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Output the contents of a submitted unit."""
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
