"""drain and uncordon: take a machine out of scheduling and move its units away, or put it back.

``drain`` writes ``cordons/<machine-id>``; the engine then places nothing new there and moves the machine's
movable units to other machines (``fleetd.engine.plan``: units pinned with ``MachineID=``, their
``MachineOf`` followers and Global units stay, and are listed here). Then it waits, as ``start`` does, until
each moved unit is active (or loaded, for a loaded unit) on another machine; a unit no other machine can run
ends the wait with the engine's reason. ``uncordon`` deletes the record: units do not move back by
themselves, new ones may go there again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import click

from fleetctl.client import FleetClient, Goal
from fleetctl.commands.blocking import block_options, budget_for, wait_for
from fleetctl.context import CommandFailed, app_of, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.engine.plan import stays_when_drained
from fleetd.errors import FleetError
from fleetd.model import MachineID, TargetState, Unit, UnitName
from fleetd.registry.snapshot import ScheduledUnit
from fleetd.unitfile.body import body_requirements

__all__ = ["COMMANDS", "find_machine"]

DRAIN_NOTE = "drained with fleetctl"


def find_machine(known: Sequence[str], wanted: str) -> MachineID:
    """The machine ``wanted`` names among ``known`` IDs: its full ID or a unique prefix (the short ID)."""
    if wanted in known:
        return MachineID(wanted)
    matches = sorted(machine_id for machine_id in known if wanted and machine_id.startswith(wanted))
    if len(matches) == 1:
        return MachineID(matches[0])
    if matches:
        raise CommandFailed(f"Error: machine {wanted} is ambiguous: {', '.join(matches)}")
    raise CommandFailed(f"Error: no machine {wanted} in the cluster (see fleetctl list-machines)")


def _staying_reason(unit: Unit) -> str:
    if unit.requirements.machine_id is not None:
        return f"pinned with MachineID={unit.requirements.machine_id}"
    if unit.requirements.peers:
        return f"follows its MachineOf peer {unit.requirements.peers[0]}"
    return "global unit"


async def _units_on(
    client: FleetClient, machine_id: MachineID
) -> tuple[list[Goal], list[tuple[str, str]]]:
    """The goals of the machine's movable units (up on another machine) and the staying units with why."""
    schedule: Mapping[UnitName, ScheduledUnit] = await client.machine_schedule(machine_id)
    records = await client.units(sorted(schedule))
    bodies = await client.bodies({record.hash for record in records.values()})
    goals: list[Goal] = []
    staying: list[tuple[str, str]] = []
    for name in sorted(records):
        record = records[name]
        try:
            requirements = body_requirements(bodies.get(record.hash, ""))(name)
        except FleetError:
            continue  # a unit the engine cannot read: it neither moves nor stays by a rule we can name
        unit = Unit(name, record.hash, requirements, record.target_state)
        if stays_when_drained(unit):
            staying.append((name, _staying_reason(unit)))
        elif record.target_state is not TargetState.INACTIVE:
            launched = record.target_state is TargetState.LAUNCHED
            goals.append(Goal(name, record.target_state, record.hash, active=launched, elsewhere=machine_id))
    return goals, staying


@click.command("drain", cls=FleetCommand)
@block_options
@click.argument("machine")
@click.pass_context
def drain(
    ctx: click.Context, /, machine: str, no_block: bool, block_attempts: int, timeout: float | None
) -> None:
    """Mark a machine unschedulable and move its units to other machines; waits until they are up there.

    MACHINE is a machine ID or its unique prefix (the short ID of list-machines). Units pinned to the
    machine with MachineID=, units following them with MachineOf= and Global units stay; they are listed.
    A unit no other machine can run is stopped and ends the wait with the engine's reason. Undo with
    fleetctl uncordon MACHINE (units do not move back by themselves).

    \b
    Examples:
      fleetctl drain 1a2b3c4d
      fleetctl drain --timeout 5m 1a2b3c4d
      fleetctl drain --no-block 1a2b3c4d
    """
    app = app_of(ctx)
    budget = budget_for(app, block_attempts, timeout)

    async def action(client: FleetClient) -> None:
        machine_id = find_machine([m.id for m in await client.machines()], machine)
        # read before the cordon is written: the engine may move the units before a read after it
        goals, staying = await _units_on(client, machine_id)
        await client.cordon(machine_id, DRAIN_NOTE)
        say(f"Machine {machine_id} cordoned")
        for name, why in staying:
            say(f"Unit {name} stays on {machine_id} ({why})")
        if no_block:
            return
        if goals:
            await wait_for(
                client, app, goals, budget=budget,
                failure=lambda problem: f"Error draining machine {machine_id}: {problem}",
            )
        say(f"Machine {machine_id} drained")

    run(ctx, action)


@click.command("uncordon", cls=FleetCommand)
@click.argument("machine")
@click.pass_context
def uncordon(ctx: click.Context, /, machine: str) -> None:
    """Make a drained (cordoned) machine schedulable again.

    MACHINE is a machine ID or its unique prefix; a cordoned machine that is not in the cluster any more is
    named by its full ID. Units moved away do not move back by themselves.

    \b
    Examples:
      fleetctl uncordon 1a2b3c4d
    """

    async def action(client: FleetClient) -> None:
        known = {m.id for m in await client.machines()} | set(await client.cordons())
        machine_id = find_machine(sorted(known), machine)
        if await client.uncordon(machine_id):
            say(f"Machine {machine_id} uncordoned")
        else:
            say(f"Machine {machine_id} was not cordoned")

    run(ctx, action)


COMMANDS = (drain, uncordon)
