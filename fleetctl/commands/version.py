"""version: print fleetctl's version."""

from __future__ import annotations

import click

from fleetctl.global_flags import FleetCommand
from fleetd.model import VERSION

__all__ = ["COMMANDS"]


@click.command("version", cls=FleetCommand)
def version() -> None:
    """Print the version and exit."""
    click.echo(f"fleetctl version {VERSION}")


COMMANDS = (version,)
