"""plan: what the engine would do if the given unit files were started now, without writing anything.

The registry is read once, at one revision, and built into a ClusterSnapshot by the engine's own
SnapshotBuilder (``FleetClient.snapshot``); the local files' units are added to it, launched (as ``start``
would: an existing unit keeps its stored text unless ``--replace``), and the engine's pure planner
(``plan_cluster``) is run on it. The output lists the placements, moves, unschedulings and updates, each with
the planner's reason, and the units no machine can run, with why. A real engine pass may differ when the
cluster changes in between (machines come and go, other units are started).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import click

from fleetctl.client import FleetClient
from fleetctl.context import CommandFailed, UsageFailed, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetctl.unit_files import read_unit_file
from fleetd.engine.plan import SCHEDULE_UPDATED, EnginePlan, Schedule, Unschedule, plan_cluster
from fleetd.errors import FleetError, UnitNameError
from fleetd.model import SHORT_ID_LENGTH, TargetState, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot
from fleetd.unitfile.body import body_requirements
from fleetd.unitfile.names import validate_unit_name

__all__ = ["COMMANDS", "plan_lines", "with_local_units"]


def with_local_units(snapshot: ClusterSnapshot, local: Sequence[Unit], *, replace: bool) -> ClusterSnapshot:
    """``snapshot`` with ``local`` units launched: a unit already in the cluster keeps its text (hash and
    requirements) unless ``replace``; either way its target becomes launched, as ``fleetctl start`` does."""
    units = dict(snapshot.units)
    for unit in local:
        existing = units.get(unit.name)
        chosen = unit if existing is None or replace else existing
        units[unit.name] = dataclasses.replace(chosen, target_state=TargetState.LAUNCHED)
    return dataclasses.replace(snapshot, units=units)


def _short(machine_id: str) -> str:
    return machine_id[:SHORT_ID_LENGTH] + "..."


def plan_lines(plan: EnginePlan) -> list[str]:
    """The plan as lines: a unit unscheduled from one machine and placed on another is one ``move``."""
    placed = {a.unit: a for a in plan.actions if isinstance(a, Schedule)}
    removed = {a.unit: a for a in plan.actions if isinstance(a, Unschedule)}
    lines: list[str] = []
    for action in plan.actions:
        name = action.unit
        if isinstance(action, Unschedule):
            target = placed.get(name)
            if target is not None and target.machine_id != action.machine_id:
                lines.append(
                    f"move {name} from {_short(action.machine_id)} to {_short(target.machine_id)}"
                    f" ({action.reason})"
                )
            else:
                lines.append(f"unschedule {name} from {_short(action.machine_id)} ({action.reason})")
        elif name in removed and removed[name].machine_id != action.machine_id:
            continue  # shown with its unscheduling, as a move
        else:
            verb = "update" if action.reason == SCHEDULE_UPDATED else "place"
            lines.append(f"{verb} {name} on {_short(action.machine_id)} ({action.reason})")
    for name, why in sorted(plan.unplaceable.items()):
        lines.append(f"cannot place {name}: {why}")
    return lines


def _local_unit(path: str) -> Unit:
    name = os.path.basename(path)
    try:
        validate_unit_name(name)
        unit_file = read_unit_file(path)
        requirements = body_requirements(unit_file.canonical)(UnitName(name))
    except UnitNameError as exc:
        raise CommandFailed(f"Error: {path}: {exc}") from exc
    except FleetError as exc:
        raise CommandFailed(f"Error: {exc}") from exc
    return Unit(UnitName(name), unit_file.hash, requirements, TargetState.LAUNCHED)


@click.command("plan", cls=FleetCommand)
@click.option("--replace", is_flag=True, help="Plan with the local files replacing units of the same name.")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.pass_context
def plan(ctx: click.Context, /, files: tuple[str, ...], replace: bool) -> None:
    """Print what the engine would do if FILE... were started now; writes nothing.

    Lists the placements, moves and other schedule changes, each with the engine's reason, and the units
    no machine could run, with why. A unit already in the cluster is planned with its stored text, unless
    --replace. With no FILE, plans the cluster as it is (what the next engine pass would do).

    \b
    Examples:
      fleetctl plan web@1.service web@2.service
      fleetctl plan --replace ./db.service
      fleetctl plan
    """
    local = [_local_unit(path) for path in files]
    if len({unit.name for unit in local}) != len(local):
        raise UsageFailed("Error: a unit name is given twice")

    async def action(client: FleetClient) -> None:
        built = await client.snapshot()
        snapshot = with_local_units(built.snapshot, local, replace=replace)
        result = plan_cluster(snapshot)
        lines = plan_lines(result)
        say(f"Plan at revision {result.revision}: {len(result.actions)} change(s)")
        for line in lines or ["nothing to do"]:
            say(line)
        for problem in built.problems:
            say(f"warning: {problem}", err=True)

    run(ctx, action)


COMMANDS = (plan,)
