"""set-metadata, unset-metadata and reset-metadata: change a machine's metadata live, and say which units
that moves.

The change is stored as live metadata (``metadata/<machine-id>``, merged over the metadata the machine's
fleet.conf publishes; see ``fleetd.metadata``), so a restarting fleetd keeps it; reset-metadata drops
overrides, so the configured values hold again. Before writing, the cluster
is read as the engine leader sees it (``FleetClient.snapshot``) and the engine's pure planner is run on it
with and without the change: the schedule changes only the new metadata causes (units whose
``MachineMetadata`` the machine no longer satisfies move away; unplaced units it now satisfies may land there)
are printed, as ``fleetctl plan`` prints them. The engine then makes them on its next pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import click

from fleetctl.client import FleetClient
from fleetctl.commands.machines import find_machine
from fleetctl.commands.plan import plan_lines
from fleetctl.context import UsageFailed, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.engine.plan import plan_cluster
from fleetd.metadata import REMOVED, RESET, MetadataChange, applied, check_key, check_value, merged
from fleetd.model import MachineState
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
    snapshot: ClusterSnapshot,
    configured: MachineState | None,
    overrides: Mapping[str, str],
    changes: Sequence[MetadataChange],
) -> list[str]:
    """The planner's lines for what ``changes`` to a machine's live ``overrides`` would do that the next
    pass would not do anyway; ``configured`` is the machine as its fleetd published it (None, or not in
    the snapshot, when it is not live: the engine does not plan for it, and the result is empty)."""
    machine = snapshot.machines.get(configured.id) if configured is not None else None
    if configured is None or machine is None:
        return []
    metadata = merged(configured, applied(overrides, changes)).metadata
    machines = {**snapshot.machines, configured.id: dataclasses.replace(machine, metadata=metadata)}
    before = set(plan_lines(plan_cluster(snapshot)))
    after = plan_lines(plan_cluster(dataclasses.replace(snapshot, machines=machines)))
    return [line for line in after if line not in before]


def _shown(key: str, value: str | None) -> str:
    return key if value in (REMOVED, RESET) else f"{key}={value}"


def _change(
    ctx: click.Context, machine: str, changes: Sequence[tuple[str, str | None]] | None, verb: str
) -> None:
    """Apply ``changes`` to ``machine``'s live metadata (None: reset every override it has)."""

    async def action(client: FleetClient) -> None:
        live = await client.live_metadata()
        machine_id = find_machine(sorted({m.id for m in await client.machines()} | set(live)), machine)
        overrides = live.get(machine_id, {})
        wanted = changes if changes is not None else [(key, RESET) for key in sorted(overrides)]
        typed = [MetadataChange(machine_id, key, value) for key, value in wanted]
        lines: list[str] = []
        if typed:
            built = await client.snapshot()
            lines = moved_by(built.snapshot, await client.configured_machine(machine_id), overrides, typed)
        if changes is None:
            await client.reset_metadata(machine_id, None)  # every override, whatever the entry holds
        else:
            await client.patch_metadata(typed)
        if not wanted:
            say(f"Machine {machine_id}: no live metadata to reset (its configured metadata holds)")
            return
        say(f"Machine {machine_id}: {verb} {', '.join(_shown(key, value) for key, value in wanted)}")
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
    set again with set-metadata, or reset with reset-metadata.

    \b
    Examples:
      fleetctl unset-metadata 1a2b3c4d disk
    """
    _change(ctx, machine, [(key, REMOVED) for key in _checked_keys(keys)], "unset")


@click.command("reset-metadata", cls=FleetCommand)
@click.argument("machine")
@click.argument("keys", nargs=-1, metavar="[KEY...]")
@click.pass_context
def reset_metadata(ctx: click.Context, /, machine: str, keys: tuple[str, ...]) -> None:
    """Drop live metadata of a machine, back to its fleet.conf values; prints the units that move.

    MACHINE is a machine ID or its unique prefix. Each KEY set or unset live takes its configured value
    again (or is absent when fleet.conf does not set it); without KEYs, every live key of the machine does.

    \b
    Examples:
      fleetctl reset-metadata 1a2b3c4d disk
      fleetctl reset-metadata 1a2b3c4d
    """
    _change(ctx, machine, [(key, RESET) for key in _checked_keys(keys)] if keys else None, "reset")


COMMANDS = (set_metadata, unset_metadata, reset_metadata)
