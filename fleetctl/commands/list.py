"""list-machines, list-units, list-unit-files: tables of spec §1.9, or JSON with ``--output json`` (schema in
docs/fleetctl-json.md); ``--watch`` keeps the view live, redrawn after each change the registry watch reports.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from fleetctl.client import FleetClient, UnitFileRow, UnitStateRow, WatchArea, changes
from fleetctl.context import CommandFailed, app_of, registry_problem, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import (
    FieldsError,
    Table,
    machine_legend,
    parse_fields,
    render_json,
    render_table,
    short_hash,
)
from fleetctl.records import (
    Record,
    machine_record,
    machine_schedulability,
    unit_file_record,
    unit_state_record,
)
from fleetd.errors import RegistryError
from fleetd.model import MachineID, MachineState

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the display: a --watch redraw on a terminal

MACHINE_FIELDS = ("machine", "ip", "metadata", "state", "cap")
MACHINE_DEFAULT_FIELDS = "machine,ip,metadata"  # the original's columns: scripts parse them
UNIT_FIELDS = ("active", "hash", "load", "machine", "reason", "sub", "unit")
UNIT_FILE_FIELDS = ("desc", "dstate", "global", "hash", "reason", "state", "target", "tmachine", "unit")

POSSIBLE_ISSUES = (
    "Possible issues:\n"
    "  etcd is unhealthy and/or lost quorum\n"
    "  connection cannot be established to any etcd servers"
)


def _table_options(default_fields: str) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        for decorator in reversed(
            [
                click.option(
                    "--full", "-l", "--l", "full", is_flag=True, help="Do not ellipsize fields on output."
                ),
                click.option("--no-legend", is_flag=True, help="Do not print a legend (column headers)."),
                click.option(
                    "--fields",
                    default=default_fields,
                    show_default=True,
                    help="Columns to print, comma-separated.",
                ),
                click.option(
                    "--output",
                    "-o",
                    "output",
                    type=click.Choice(["table", "json"]),
                    default="table",
                    show_default=True,
                    help="Output format (json: one document for scripts; --fields, --full and --no-legend"
                    " shape tables only).",
                ),
                click.option(
                    "--watch",
                    "-w",
                    is_flag=True,
                    help="Keep running: print the view again whenever it changes (a terminal is redrawn;"
                    " JSON prints one document per line). Ctrl-C ends it.",
                ),
            ]
        ):
            f = decorator(f)
        return f

    return decorate


def _columns(fields: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return parse_fields(fields, valid)
    except FieldsError as exc:
        raise CommandFailed(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class View:
    """How the user asked to see a list: format, legend, and whether to keep watching."""

    output: str
    no_legend: bool
    watch: bool

    @property
    def json(self) -> bool:
        return self.output == "json"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a list is read and rendered.

    A list of 10,000 units makes some 50,000 objects that live until it is printed and none that form a
    cycle; the collector would walk the growing heap dozens of times for nothing (measured: 15-25 ms of CPU
    for 10,000 units). It is back on afterwards, so a ``--watch`` between redraws collects as usual."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _show(
    ctx: click.Context,
    view: View,
    *,
    read: Callable[[FleetClient], Awaitable[R]],
    table: Callable[[R], Table],
    records: Callable[[R], list[Record]],
    areas: Sequence[WatchArea],
) -> None:
    """Read and print the list once, or with ``view.watch`` again after every change in ``areas`` until
    interrupted (Ctrl-C: exit 130, in the CLI's one handler).

    Watching is level-triggered: each wake-up of the registry watch re-reads the whole list, and prints it
    only when its text changed. On a terminal a table is redrawn on a cleared screen; otherwise each new
    table follows the last after a blank line. JSON prints one document per line (JSON Lines) while
    watching."""

    def render(rows: R) -> str:
        if view.json:
            return render_json(records(rows), compact=view.watch)
        return render_table(table(rows), legend=not view.no_legend)

    if not view.watch:
        with _collector_paused():
            click.echo(render(run(ctx, read)), nl=False)
        return
    redraw = app_of(ctx).is_tty and not view.json

    async def live(client: FleetClient) -> None:
        shown: str | None = None
        async for _wake in changes(client, areas):
            with _collector_paused():
                text = render(await read(client))
            if text == shown:
                continue
            if redraw:
                click.echo(CLEAR_SCREEN, nl=False, color=True)
            elif shown is not None and not view.json:
                click.echo()
            click.echo(text, nl=False)
            shown = text

    run(ctx, live)


Machines = tuple[tuple[MachineState, ...], frozenset[MachineID]]  # live machines, cordoned machine IDs


def _machine_cells(machine: MachineState, full: bool, cordoned: frozenset[MachineID]) -> dict[str, str]:
    metadata = ",".join(f"{key}={machine.metadata[key]}" for key in sorted(machine.metadata))
    return {
        "machine": machine.id if full else f"{machine.short_id}...",
        "ip": machine.public_ip or "-",
        "metadata": metadata or "-",
        "state": machine_schedulability(machine.id in cordoned),
        "cap": str(machine.max_units) if machine.max_units else "-",
    }


@click.command("list-machines", cls=FleetCommand)
@_table_options(MACHINE_DEFAULT_FIELDS)
@click.pass_context
def list_machines(
    ctx: click.Context, /, *, full: bool, no_legend: bool, fields: str, output: str, watch: bool
) -> None:
    """Enumerate the current hosts in the cluster.

    Only machines whose fleetd is alive are listed (a machine drops out when its presence lease expires).
    STATE is schedulable, or cordoned after fleetctl drain (until fleetctl uncordon); the cap field is the
    most units the engine places there (max_units / fleet.max-units; - for none).

    \b
    Examples:
      fleetctl list-machines
      fleetctl list-machines --full --no-legend     # whole IDs, no header: for scripts
      fleetctl list-machines --fields machine,metadata
      fleetctl list-machines --fields machine,state,cap
      fleetctl list-machines -o json
      fleetctl list-machines --watch                # redrawn as machines come and go
    """
    columns = _columns(fields, MACHINE_FIELDS)
    app = app_of(ctx)

    async def action(client: FleetClient) -> Machines:
        try:
            return await client.machines(), frozenset(await client.cordons())
        except RegistryError as exc:
            problem = registry_problem(app.options, exc)
            raise CommandFailed(
                f"Error retrieving list of active machines from fleet API ({problem})\n{POSSIBLE_ISSUES}"
            ) from exc

    _show(
        ctx,
        View(output, no_legend, watch),
        read=action,
        table=lambda read: Table(columns, tuple(_machine_cells(m, full, read[1]) for m in read[0])),
        records=lambda read: [machine_record(m, m.id in read[1]) for m in read[0]],
        areas=("machines", "cordons"),
    )


def _unit_state_cells(row: UnitStateRow, full: bool, legends: dict[str, str]) -> dict[str, str]:
    """One row's cells; ``legends`` caches each machine's legend (a machine runs many units)."""
    state = row.state
    machine_id = state.machine_id
    machine = legends.get(machine_id)
    if machine is None:
        if not machine_id:
            machine = "-"
        else:
            ip = row.machine.public_ip if row.machine is not None else ""
            machine = machine_legend(machine_id, ip, full=full)
        legends[machine_id] = machine
    return {
        "unit": state.name,
        "machine": machine,
        "active": state.active_state or "-",
        "sub": state.sub_state or "-",
        "load": state.load_state or "-",
        "hash": short_hash(state.hash, full=full) if state.hash else "-",
        "reason": row.reason or "-",
    }


@click.command("list-units", cls=FleetCommand)
@_table_options("unit,machine,active,sub")
@click.pass_context
def list_units(
    ctx: click.Context, /, *, full: bool, no_legend: bool, fields: str, output: str, watch: bool
) -> None:
    """List the current state of units in the cluster.

    One row per unit and machine, as the machines' agents last reported it: fleet's state and systemd's
    LoadState, ActiveState and SubState. Units that no machine has loaded are not listed (see
    list-unit-files). Fields: active, hash, load, machine, reason (what the engine did after the unit
    failed, for units with Reschedule=on-failure), sub, unit.

    \b
    Examples:
      fleetctl list-units
      fleetctl list-units --no-legend --full
      fleetctl list-units --fields unit,machine,active
      fleetctl list-units -o json
      fleetctl list-units --watch                   # redrawn whenever a unit's state changes
    """
    columns = _columns(fields, UNIT_FIELDS)
    app = app_of(ctx)

    async def action(client: FleetClient) -> list[UnitStateRow]:
        try:
            return await client.unit_state_rows(reasons="reason" in columns)
        except RegistryError as exc:
            problem = registry_problem(app.options, exc)
            raise CommandFailed(f"Error retrieving list of units from repository: {problem}") from exc

    def table(rows: list[UnitStateRow]) -> Table:
        legends: dict[str, str] = {}
        return Table(columns, tuple([_unit_state_cells(row, full, legends) for row in rows]))

    _show(
        ctx,
        View(output, no_legend, watch),
        read=action,
        table=table,
        records=lambda rows: [unit_state_record(row) for row in rows],
        areas=("states", "machines"),
    )


def _target_cell(row: UnitFileRow, full: bool) -> str:
    if row.record.is_global:
        return "global"
    if row.target is None:
        return "-"
    if isinstance(row.target, MachineState):
        return machine_legend(row.target.id, row.target.public_ip, full=full)
    return machine_legend(row.target, "", full=full)


def _unit_file_cells(row: UnitFileRow, full: bool) -> Mapping[str, str]:
    target = _target_cell(row, full)
    return {
        "unit": row.record.name,
        "hash": short_hash(row.record.hash, full=full),
        "dstate": row.record.target_state.value,
        "state": row.current.value if row.current is not None else "-",
        "target": target,
        "tmachine": target,
        "global": "true" if row.record.is_global else "false",
        "desc": row.description or "-",
        "reason": row.reason or "-",
    }


@click.command("list-unit-files", cls=FleetCommand)
@_table_options("unit,hash,dstate,state,target")
@click.pass_context
def list_unit_files(
    ctx: click.Context, /, *, full: bool, no_legend: bool, fields: str, output: str, watch: bool
) -> None:
    """List the units that exist in the cluster.

    Every submitted unit with its desired state (dstate), current state and target machine, loaded or not.
    Fields: desc, dstate, global, hash, reason (why no machine can run it, or what the engine did after it
    failed), state, target, tmachine (deprecated: target), unit.

    \b
    Examples:
      fleetctl list-unit-files
      fleetctl list-unit-files --fields unit,desc,dstate,target
      fleetctl list-unit-files --fields unit,target,reason   # why units are not placed
      fleetctl list-unit-files -o json
      fleetctl list-unit-files --watch
    """
    columns = _columns(fields, UNIT_FILE_FIELDS)
    if "tmachine" in columns:
        click.echo('WARNING: The "tmachine" field is deprecated. Use "target" instead', err=True)
    app = app_of(ctx)

    async def action(client: FleetClient) -> list[UnitFileRow]:
        try:
            return await client.unit_file_rows(descriptions="desc" in columns or output == "json")
        except RegistryError as exc:
            problem = registry_problem(app.options, exc)
            raise CommandFailed(f"Error retrieving list of units from repository: {problem}") from exc

    _show(
        ctx,
        View(output, no_legend, watch),
        read=action,
        table=lambda rows: Table(columns, tuple(_unit_file_cells(row, full) for row in rows)),
        records=lambda rows: [unit_file_record(row) for row in rows],
        areas=("units", "targets", "schedule", "states", "machines"),
    )


COMMANDS = (list_machines, list_units, list_unit_files)
