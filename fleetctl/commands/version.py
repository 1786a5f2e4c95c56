"""version: print fleetctl's version."""

from __future__ import annotations

import click

from fleetd.model import VERSION

__all__ = ["COMMANDS"]


@click.command("version")
def version() -> None:
    """Print the version and exit."""
    click.echo(f"fleetctl version {VERSION}")


COMMANDS = (version,)
