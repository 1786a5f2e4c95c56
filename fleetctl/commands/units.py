"""submit, load, start, stop, unload, destroy, restart (spec §1.4-1.7, DESIGN.md §7)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import click

from fleetctl.client import FleetClient, Goal
from fleetctl.commands.blocking import Budget, block_options, budget_for, report_triggered, wait_for
from fleetctl.completion import complete_units, complete_units_or_files
from fleetctl.context import App, CommandFailed, UsageFailed, app_of, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetctl.resolve import CreateResult, ResolveError, create_units, find_units
from fleetd.errors import NotFound, UnitFileError, UnitNameError
from fleetd.model import TargetState
from fleetd.registry.keyspace import UnitRecord
from fleetd.unitfile.names import UnitNameInfo

__all__ = ["COMMANDS"]

INACTIVE, LOADED, LAUNCHED = TargetState.INACTIVE, TargetState.LOADED, TargetState.LAUNCHED


def _warn(message: str) -> None:
    say(message, err=True)


def _say(message: str) -> None:
    say(message)


def _require(args: Sequence[str]) -> None:
    if not args:
        raise UsageFailed("No units given")


def _go_list(names: Sequence[str]) -> str:
    return f"[{' '.join(names)}]"


async def _create(
    client: FleetClient,
    app: App,
    args: Sequence[str],
    *,
    replace: bool,
    allowed: Collection[TargetState],
    templates: bool,
    budget: Budget,
) -> CreateResult:
    """Create what is missing (or replaced), then wait until each new one is inactive (ignores --no-block).

    Local files are read and judged by ``fleetctl.unit_files`` (as ``verify`` judges them); an argument that
    cannot become a unit fails the command before anything is written."""
    try:
        result = await create_units(
            client, args, replace=replace, allowed=allowed, warn=_warn, say=_say, templates=templates
        )
    except (ResolveError, UnitFileError, UnitNameError) as exc:
        raise CommandFailed(f"Error creating units: {exc}") from exc
    await wait_for(client, app, [Goal(name, INACTIVE) for name in result.created], budget=budget)
    return result


def _no_templates(names: Sequence[str], doing: str) -> None:
    for name in names:
        info = UnitNameInfo.parse(name)
        if info is not None and info.is_template:
            raise CommandFailed(f'Error {doing} units: cannot activate template "{name}"')


async def _set(client: FleetClient, records: Sequence[UnitRecord], state: TargetState, doing: str) -> None:
    try:
        await client.set_targets({r.name: state for r in records if r.target_state is not state})
    except NotFound as exc:
        raise CommandFailed(f"Error {doing} units: unable to find unit {exc.name}") from exc


async def _change_and_report(
    client: FleetClient,
    app: App,
    records: Sequence[UnitRecord],
    state: TargetState,
    verbs: tuple[str, str, str],
    *,
    no_block: bool,
    budget: Budget,
) -> None:
    """stop/unload: set the target state, wait (fleet's failure line names the units), say it succeeded.
    ``verbs``: the -ing form (errors), the plain form (waits) and the past form (the success line)."""
    doing, verb, done = verbs
    names = _go_list([r.name for r in records])
    await _set(client, records, state, doing)
    failure = f"Failed to {verb} units {names}. err: {{}}"
    await _settle(client, app, records, state, verb, no_block=no_block, budget=budget, failure=failure)
    if not no_block:
        say(f"Successfully {done} units {names}.", err=True)


async def _settle(
    client: FleetClient,
    app: App,
    records: Sequence[UnitRecord],
    state: TargetState,
    verb: str,
    *,
    no_block: bool,
    budget: Budget,
    failure: str = "Error waiting for units: {}",
) -> None:
    """Report global units as triggered; wait for the others (or report them triggered with --no-block)."""
    report_triggered([r.name for r in records if r.is_global], verb, is_global=True)
    local = [r for r in records if not r.is_global]
    if no_block:
        report_triggered([r.name for r in local], verb)
        return
    goals = [Goal(r.name, state, r.hash, active=state is LAUNCHED) for r in local]
    await wait_for(client, app, goals, budget=budget, failure=failure.format)


def _activate(ctx: click.Context, flags: Mapping[str, Any], *, state: TargetState) -> None:
    """load and start: ``flags`` are the command's (units, --replace and the blocking flags)."""
    args: tuple[str, ...] = flags["units"]
    replace: bool = flags["replace"]
    no_block: bool = flags["no_block"]
    _require(args)
    app = app_of(ctx)
    budget = budget_for(app, flags["block_attempts"], flags["timeout"])
    verb, doing = ("start", "starting") if state is LAUNCHED else ("load", "loading")
    allowed = (INACTIVE, LOADED, LAUNCHED) if state is LAUNCHED else (INACTIVE, LOADED)

    async def action(client: FleetClient) -> None:
        result = await _create(
            client, app, args, replace=replace, allowed=allowed, templates=False, budget=budget
        )
        _no_templates(result.names, doing)
        records = [result.records[name] for name in result.names]
        await _set(client, records, state, doing)
        await _settle(client, app, records, state, verb, no_block=no_block, budget=budget)

    run(ctx, action)


_replace_option = click.option("--replace", is_flag=True, help="Replace units whose local file differs.")
_sign_option = click.option("--sign", is_flag=True, hidden=True, help="Deprecated; ignored.")


@click.command("submit", cls=FleetCommand)
@_replace_option
@_sign_option
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@click.pass_context
def submit(ctx: click.Context, replace: bool, sign: bool, units: tuple[str, ...]) -> None:
    """Upload one or more units to the cluster without starting them.

    Each argument is a local unit file, or the name of a unit already in the cluster (kept as it is unless
    --replace and its file differs). An instance (hello@1) comes from its template in the cluster or beside
    the argument. Globs match local files and units in the cluster.

    \b
    Examples:
      fleetctl submit hello.service
      fleetctl submit units/*.service
      fleetctl submit --replace hello.service      # upload a changed file
    """
    _require(units)
    app = app_of(ctx)

    async def action(client: FleetClient) -> None:
        await _create(client, app, units, replace=replace, allowed=(INACTIVE,), templates=True, budget=None)

    run(ctx, action)


@click.command("load", cls=FleetCommand)
@block_options
@_replace_option
@_sign_option
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@click.pass_context
def load(ctx: click.Context, /, **flags: Any) -> None:
    """Schedule one or more units in the cluster, first submitting them if necessary.

    Each unit is placed on a machine that meets its [X-Fleet] requirements (MachineMetadata, Conflicts,
    MachineOf, MachineID, Global) and loaded into systemd there, not started. Waits until every unit is
    loaded, unless --no-block; --timeout or --block-attempts bound the wait.

    \b
    Examples:
      fleetctl load hello.service
      fleetctl load 'hello@*'                       # every hello@ instance in the cluster
      fleetctl load --timeout 30s web@1 web@2
    """
    _activate(ctx, flags, state=LOADED)


@click.command("start", cls=FleetCommand)
@block_options
@_replace_option
@_sign_option
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@click.pass_context
def start(ctx: click.Context, /, **flags: Any) -> None:
    """Instruct systemd to start one or more units, first submitting and loading them if necessary.

    Waits until systemd reports each unit active (global units are only triggered). A unit systemd reports
    failed ends the wait with its states and the command that shows why: fleetctl journal UNIT. --no-block
    returns at once; --timeout DURATION or --block-attempts N bound the wait.

    \b
    Examples:
      fleetctl start hello.service
      fleetctl start 'hello@*'                      # every hello@ instance in the cluster
      fleetctl start hello@{1..3}                   # three instances of the template hello@.service
      fleetctl start --timeout 1m units/*.service
      fleetctl start --no-block monitor.service
    """
    _activate(ctx, flags, state=LAUNCHED)


async def _found(client: FleetClient, args: Sequence[str]) -> list[UnitRecord]:
    records = await find_units(client, args)
    if not records:
        raise CommandFailed("Units not found in registry")
    return records


@click.command("stop", cls=FleetCommand)
@block_options
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def stop(
    ctx: click.Context, block_attempts: int, no_block: bool, timeout: float | None, units: tuple[str, ...]
) -> None:
    """Instruct systemd to stop one or more units in the cluster.

    The units stay loaded on their machines (start brings them back there). Waits until each is stopped,
    unless --no-block.

    \b
    Examples:
      fleetctl stop hello.service
      fleetctl stop 'hello@*'
      fleetctl stop --no-block web@1 web@2
    """
    _require(units)
    app = app_of(ctx)
    budget = budget_for(app, block_attempts, timeout)

    async def action(client: FleetClient) -> None:
        records = await _found(client, units)
        current = await client.current_states([r.name for r in records if not r.is_global])
        stopping = []
        for record in records:
            if not record.is_global:
                if current[record.name] is INACTIVE:
                    raise CommandFailed(f"Unable to stop unit {record.name} in state inactive")
                if current[record.name] is LOADED and record.target_state is LOADED:
                    continue
            stopping.append(record)
        if not stopping:
            return
        await _change_and_report(
            client, app, stopping, LOADED, ("stopping", "stop", "stopped"), no_block=no_block, budget=budget
        )

    run(ctx, action)


@click.command("unload", cls=FleetCommand)
@block_options
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def unload(
    ctx: click.Context, block_attempts: int, no_block: bool, timeout: float | None, units: tuple[str, ...]
) -> None:
    """Unschedule one or more units in the cluster.

    Stops the units and unloads them from their machines; they stay in the cluster (list-unit-files) and
    load or start places them again. Waits until each is unloaded, unless --no-block.

    \b
    Examples:
      fleetctl unload hello.service
      fleetctl unload 'hello@*'
    """
    _require(units)
    app = app_of(ctx)
    budget = budget_for(app, block_attempts, timeout)

    async def action(client: FleetClient) -> None:
        records = await _found(client, units)
        current = await client.current_states([r.name for r in records if not r.is_global])
        unloading = [
            r
            for r in records
            if r.is_global or current[r.name] is not INACTIVE or r.target_state is not INACTIVE
        ]
        if not unloading:
            return
        await _change_and_report(
            client, app, unloading, INACTIVE, ("unloading", "unload", "unloaded"), no_block=no_block,
            budget=budget,
        )

    run(ctx, action)


@click.command("destroy", cls=FleetCommand)
@block_options
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def destroy(
    ctx: click.Context, block_attempts: int, no_block: bool, timeout: float | None, units: tuple[str, ...]
) -> None:
    """Destroy one or more units in the cluster; waits until no machine runs them (unless --no-block).

    The units are stopped, unloaded and removed from the cluster: to run them again, submit them again.

    \b
    Examples:
      fleetctl destroy hello.service
      fleetctl destroy 'hello@*'
      fleetctl destroy --timeout 20s old.service
    """
    _require(units)
    app = app_of(ctx)
    budget = budget_for(app, block_attempts, timeout)

    async def action(client: FleetClient) -> None:
        records = await _found(client, units)
        names = [r.name for r in records]
        await client.destroy(names)
        for name in names:
            say(f"Destroyed {name}")
        if not no_block:
            await wait_for(
                client,
                app,
                [Goal(n, INACTIVE) for n in names],
                budget=budget,
                failure="Error destroying units: {}".format,
                quiet=True,
            )

    run(ctx, action)


@click.command("restart", cls=FleetCommand)
@block_options
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def restart(
    ctx: click.Context, block_attempts: int, no_block: bool, timeout: float | None, units: tuple[str, ...]
) -> None:
    """Restart one or more units in the cluster: stop each (waiting until it is loaded), then start it.

    Units that are loaded but not running are just started. Global units cannot be restarted: stop, then
    start them.

    \b
    Examples:
      fleetctl restart hello.service
      fleetctl restart 'web@*'
    """
    _require(units)
    app = app_of(ctx)
    budget = budget_for(app, block_attempts, timeout)

    async def action(client: FleetClient) -> int:
        records = await _found(client, units)
        current = await client.current_states([r.name for r in records if not r.is_global])
        failed = False
        running: list[UnitRecord] = []
        starting: list[UnitRecord] = []
        for record in records:
            if record.is_global:
                _warn(f"Unable to restart global unit {record.name}: use stop, then start")
                failed = True
            elif current[record.name] is INACTIVE:
                _warn(f"Unable to restart unit {record.name} in state inactive")
                failed = True
            else:
                starting.append(record)
                if current[record.name] is LAUNCHED:
                    running.append(record)
        await _set(client, running, LOADED, "restarting")
        await wait_for(client, app, [Goal(r.name, LOADED, r.hash) for r in running], budget=budget)
        # Re-read: the stop reset their target state to loaded.
        fresh = await client.units([r.name for r in starting])
        starting = [fresh[r.name] for r in starting if r.name in fresh]
        await _set(client, starting, LAUNCHED, "restarting")
        await _settle(client, app, starting, LAUNCHED, "start", no_block=no_block, budget=budget)
        return 1 if failed else 0

    if run(ctx, action):
        ctx.exit(1)


COMMANDS = (submit, load, start, stop, unload, destroy, restart)
