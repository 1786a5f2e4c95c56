"""set-metadata and unset-metadata: change a machine's metadata live, and say which units that moves.

The change is stored as live metadata (``metadata/<machine-id>``, merged over the metadata the machine's
fleet.conf publishes; see ``fleetd.metadata``), so a restarting fleetd keeps it. Before writing, the cluster
is read as the engine leader sees it (``FleetClient.snapshot``) and the engine's pure planner is run on it
with and without the change: the schedule changes only the new metadata causes (units whose
``MachineMetadata`` the machine no longer satisfies move away; unplaced units it now satisfies may land there)
are printed, as ``fleetctl plan`` prints them. The engine then makes them on its next pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import click

from fleetctl.client import FleetClient
from fleetctl.commands.machines import find_machine
from fleetctl.commands.plan import plan_lines
from fleetctl.context import UsageFailed, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.engine.plan import plan_cluster
from fleetd.metadata import REMOVED, MetadataChange, check_key, check_value, merged
from fleetd.model import MachineID
from fleetd.registry.snapshot import ClusterSnapshot

__all__ = ["COMMANDS", "moved_by", "parse_assignments"]


def parse_assignments(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``key=value`` arguments as (key, value); UsageFailed naming the first bad one."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageFailed(f"Error: {pair!r} is not key=value (to remove a key, use unset-metadata)")
        problem = check_key(key) or check_value(value)
        if problem is not None:
            raise UsageFailed(f"Error: {pair!r}: {problem}")
        out.append((key, value))
    return out


def _checked_keys(keys: Sequence[str]) -> list[str]:
    for key in keys:
        problem = check_key(key)
        if problem is not None:
            raise UsageFailed(f"Error: {problem}")
    return list(keys)


def moved_by(
    snapshot: ClusterSnapshot, machine_id: MachineID, changes: Sequence[MetadataChange]
) -> list[str]:
    """The planner's lines for what ``changes`` to ``machine_id``'s metadata would do that the next pass
    would not do anyway (empty when the machine is not live: the engine does not plan for it)."""
    machine = snapshot.machines.get(machine_id)
    if machine is None:
        return []
    overrides = {change.key: change.value for change in changes}
    machines = {**snapshot.machines, machine_id: merged(machine, overrides)}
    before = set(plan_lines(plan_cluster(snapshot)))
    after = plan_lines(plan_cluster(dataclasses.replace(snapshot, machines=machines)))
    return [line for line in after if line not in before]


def _change(ctx: click.Context, machine: str, changes: list[tuple[str, str]], verb: str) -> None:
    async def action(client: FleetClient) -> None:
        known = {m.id for m in await client.machines()} | set(await client.live_metadata())
        machine_id = find_machine(sorted(known), machine)
        built = await client.snapshot()
        typed = [MetadataChange(machine_id, key, value) for key, value in changes]
        lines = moved_by(built.snapshot, machine_id, typed)
        await client.patch_metadata(typed)
        shown = ", ".join(key if value == REMOVED else f"{key}={value}" for key, value in changes)
        say(f"Machine {machine_id}: {verb} {shown}")
        for line in lines:
            say(f"Planned: {line}")
        if not lines:
            say("No unit moves")

    run(ctx, action)


@click.command("set-metadata", cls=FleetCommand)
@click.argument("machine")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def set_metadata(ctx: click.Context, /, machine: str, pairs: tuple[str, ...]) -> None:
    """Set metadata on a machine live (kept across fleetd restarts); prints the units that move.

    MACHINE is a machine ID or its unique prefix. Each KEY=VALUE follows the rules of fleet.conf's metadata
    (no ',' in keys or values, no '=' in keys). Units whose MachineMetadata the machine no longer satisfies
    move to another machine on the engine's next pass; the moves are computed as fleetctl plan does.

    \b
    Examples:
      fleetctl set-metadata 1a2b3c4d disk=ssd region=us-east
    """
    _change(ctx, machine, parse_assignments(pairs), "set")


@click.command("unset-metadata", cls=FleetCommand)
@click.argument("machine")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.pass_context
def unset_metadata(ctx: click.Context, /, machine: str, keys: tuple[str, ...]) -> None:
    """Remove metadata keys from a machine live (configured ones too); prints the units that move.

    MACHINE is a machine ID or its unique prefix. A key set in the machine's fleet.conf stays hidden until
    set again with set-metadata.

    \b
    Examples:
      fleetctl unset-metadata 1a2b3c4d disk
    """
    _change(ctx, machine, [(key, REMOVED) for key in _checked_keys(keys)], "unset")


COMMANDS = (set_metadata, unset_metadata)
