"""rolling-update: give running units a new body a step at a time (the decisions are fleetctl.rollout's).

The shell reads the units, their published states and (with ``HealthCheck=``) the check's exit status on
each unit's machine, asks ``fleetctl.rollout.decide`` what to do, writes it and prints progress. Its record
lives at ``rollouts/<template-or-unit>`` and is written before every change of the units, so running the
same command again after an interruption resumes where it stopped.

A unit is given its new body in place: its record is rewritten with the new hash and its target state kept
(one Txn), the engine updates its schedule entry where it is, and the agent there, seeing another hash,
stops the unit, replaces its file and starts it again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import click

from fleetctl.client import FleetClient
from fleetctl.commands.remote import SSH_PORT, RunnerFactory, default_runner
from fleetctl.context import CommandFailed, UsageFailed, app_of, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetctl.params import Seconds
from fleetctl.rollout import (
    DONE,
    FAILED,
    ROLLING,
    Act,
    Decision,
    Observed,
    Settings,
    decide,
    decide_global,
    dry_run_steps,
    global_steps,
)
from fleetctl.ssh.config import DEFAULT_SSH_PORT
from fleetctl.ssh.remote import Runner
from fleetctl.unit_files import LocalUnitFileError, read_unit_file
from fleetd.errors import FleetError
from fleetd.glob import match as glob_match
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, UnitRecord
from fleetd.registry.records import Rollout
from fleetd.unitfile.body import checked_unit_file
from fleetd.unitfile.names import UnitNameInfo, mangle
from fleetd.unitfile.requirements import health_check
from fleetd.unitfile.unit import UnitFile
from fleetd.units import is_global, new_record
from fleetd.values import Bounds

__all__ = ["COMMANDS"]

POLL = 1.0  # seconds between two looks at the units while a step comes up
HEALTHY_BOUNDS = Bounds(0.0, 86_400.0)  # --min-healthy-time: 0 .. 24h
STEP_BOUNDS = Bounds(1.0, 86_400.0)  # --step-timeout: 1s .. 24h


def _natural(name: str) -> tuple[object, ...]:
    """web@2 before web@10."""
    parts: list[object] = []
    digits = ""
    for char in name + "\0":
        if char.isdigit():
            digits += char
            continue
        if digits:
            parts.append((0, int(digits)))
            digits = ""
        parts.append((1, char))
    return tuple(parts)


def _rollout_name(path: str, pattern: str) -> UnitName:
    """The name the rollout is recorded under: the file's template or unit name."""
    base = os.path.basename(path)
    info = UnitNameInfo.parse(base)
    if info is None:
        raise UsageFailed(f"{path} is not named like a unit file (e.g. web@.service or web.service)")
    if not info.is_template and mangle(pattern) != base:
        raise UsageFailed(f"{path} is the unit {base}: give {base} as UNITS, or give a template file")
    return UnitName(base)


def _targets(name: UnitName, pattern: str, units: Sequence[UnitRecord]) -> list[UnitRecord]:
    info = UnitNameInfo.parse(name)
    wanted = mangle(pattern)
    if info is not None and info.is_template:
        found = [
            r for r in units
            if (i := UnitNameInfo.parse(r.name)) is not None and i.is_instance and i.template == name
            and glob_match(wanted, r.name)
        ]
    else:
        found = [r for r in units if r.name == name]
    return sorted(found, key=lambda r: _natural(r.name))


async def _read_rollout(client: FleetClient, name: UnitName) -> Rollout | None:
    kv = await client.registry.kv.get(client.registry.keys.rollout(name))
    if kv is None:
        return None
    try:
        return records.decode_rollout(kv.key, kv.value)
    except BadRecord as exc:
        raise CommandFailed(f"Error: {exc}; drop it with fleetctl rolling-update --abort {name}") from exc


async def _write_rollout(client: FleetClient, rollout: Rollout) -> None:
    await client.registry.kv.put(client.registry.keys.rollout(rollout.name), records.encode_rollout(rollout))


@dataclass
class _Watch:
    """What the shell remembers between looks: when each unit was first seen active at its hash, and each
    unit's last health-check result at its hash."""

    active_since: dict[UnitName, tuple[str, float]] = field(default_factory=dict)
    checks: dict[UnitName, tuple[str, bool]] = field(default_factory=dict)


class _Shell:
    def __init__(
        self,
        client: FleetClient,
        runner: Runner | None,
        ssh_port: int,
        settings: Settings,
        checks: dict[str, str],
    ) -> None:
        self.client = client
        self.runner = runner
        self.ssh_port = ssh_port
        self.settings = settings
        self.checks = checks  # body hash -> its HealthCheck= command
        self.watch = _Watch()

    async def observe(self, rollout: Rollout) -> dict[UnitName, Observed]:
        now = time.monotonic()
        names = list(rollout.units)
        current = await self.client.units(names)
        states: dict[str, list[UnitState]] = {}
        for state in await self.client.registry.list_unit_states(names):
            states.setdefault(state.name, []).append(state)
        machines = await self.client.machine_map()
        out: dict[UnitName, Observed] = {}
        for name in names:
            record = current.get(name)
            if record is None:
                out[name] = Observed("")
                continue
            launched = record.target_state is TargetState.LAUNCHED
            out[name] = await self._see(
                name, record.hash, launched, states.get(name, ()), machines, name in rollout.replaced, now
            )
        return out

    async def _see(  # noqa: PLR0917 (one member's facts)
        self, member: UnitName, unit_hash: str, launched: bool, states: Sequence[UnitState],
        machines: Mapping[MachineID, MachineState], replaced: bool, now: float,
    ) -> Observed:
        """One member (a unit, or a machine of a Global unit) meant to run ``unit_hash``, from its states."""
        mine = [s for s in states if s.hash == unit_hash and s.state is TargetState.LAUNCHED]
        active = next((s for s in mine if s.load_state == "loaded" and s.active_state == "active"), None)
        failed = any(s.active_state == "failed" for s in mine)
        since = self.watch.active_since.get(member)
        if active is None:
            self.watch.active_since.pop(member, None)
        elif since is None or since[0] != unit_hash:
            self.watch.active_since[member] = since = (unit_hash, now)
        check = None
        if active is not None and replaced:
            check = await self._check(member, unit_hash, machines.get(active.machine_id))
        return Observed(
            unit_hash,
            launched=launched,
            active=active is not None,
            failed=failed,
            check=check,
            active_for=now - since[1] if active is not None and since is not None else 0.0,
        )

    async def observe_machines(self, rollout: Rollout) -> dict[MachineID, Observed]:
        """A Global unit on each machine of its rollout, at the hash it is meant to run there (its pin's, or
        the unit's); a machine that left the cluster (or a unit destroyed meanwhile) is seen as gone."""
        now = time.monotonic()
        record = (await self.client.units([rollout.name])).get(rollout.name)
        machines = await self.client.machine_map()
        pins = await self.client.registry.get_pins(rollout.name, rollout.machines)
        states: dict[MachineID, list[UnitState]] = {}
        for state in await self.client.registry.list_unit_states([rollout.name]):
            states.setdefault(state.machine_id, []).append(state)
        out: dict[MachineID, Observed] = {}
        for machine_id in rollout.machines:
            if record is None or machine_id not in machines:
                out[machine_id] = Observed("")
                continue
            launched = record.target_state is TargetState.LAUNCHED
            out[machine_id] = await self._see(
                UnitName(machine_id), pins.get(machine_id, record.hash), launched, states.get(machine_id, ()),
                machines, machine_id in rollout.machines_replaced, now,
            )
        return out

    async def _check(self, name: UnitName, unit_hash: str, machine: MachineState | None) -> bool | None:
        command = self.checks.get(unit_hash)
        if command is None or self.runner is None or machine is None:
            return None
        known = self.watch.checks.get(name)
        if known is not None and known == (unit_hash, True):
            return True  # passed once at this hash: not asked again
        code = await asyncio.to_thread(self.runner.run, machine, ["sh", "-c", command], self.ssh_port)
        self.watch.checks[name] = (unit_hash, code == 0)
        return code == 0

    async def replace_units(self, rollout: Rollout, names: Sequence[UnitName]) -> Rollout:
        """Record the step, then write each unit's goal body with its target state kept."""
        if rollout.phase == ROLLING:
            added = [n for n in names if n not in rollout.replaced]
            rollout = replace(rollout, replaced=(*rollout.replaced, *added))
        await _write_rollout(self.client, rollout)
        current = await self.client.units(list(names))
        writes = []
        for name in names:
            record = current.get(name)
            if record is None:
                continue
            goal = rollout.hash if rollout.phase == ROLLING else rollout.old[name]
            text = rollout.body if goal == rollout.hash else rollout.old_bodies[goal]
            writes.append(new_record(name, checked_unit_file(text), record.target_state))
        await self.client.put_units(writes)
        return rollout


    async def replace_machines(self, rollout: Rollout, machines: Sequence[MachineID]) -> Rollout:
        """Record the step, then unpin the machines (rolling) or pin them to the old hash (rolling back)."""
        registry = self.client.registry
        if rollout.phase == ROLLING:
            added = [m for m in machines if m not in rollout.machines_replaced]
            rollout = replace(rollout, machines_replaced=(*rollout.machines_replaced, *added))
            await _write_rollout(self.client, rollout)
            await registry.unpin(rollout.name, machines)
            return rollout
        await _write_rollout(self.client, rollout)
        await registry.set_pins(rollout.name, machines, rollout.old[rollout.name])
        return rollout


def _checks_of(rollout: Rollout) -> dict[str, str]:
    out: dict[str, str] = {}
    for unit_hash, text in {rollout.hash: rollout.body, **rollout.old_bodies}.items():
        try:
            command = health_check(UnitFile.from_text(text))
        except FleetError:
            continue
        if command is not None:
            out[unit_hash] = command
    return out


async def _start(
    client: FleetClient, name: UnitName, pattern: str, unit_file: UnitFile, max_unavailable: int
) -> Rollout:
    units = _targets(name, pattern, await client.all_units())
    if not units:
        raise CommandFailed(f"Error: no unit in the cluster matches {pattern} (for {name})")
    globals_ = [r.name for r in units if r.is_global]
    if globals_ and len(units) > 1:
        raise CommandFailed(
            f"Error: {globals_[0]} is a Global unit: roll it on its own (fleetctl rolling-update"
            f" {globals_[0]} FILE), machine by machine"
        )
    if globals_:
        return await _start_global(client, units[0], unit_file, max_unavailable)
    template = (await client.units([name])).get(name) if name not in [r.name for r in units] else None
    old = {r.name: r.hash for r in units}
    if template is not None:
        old[template.name] = template.hash
    bodies = await client.bodies(set(old.values()) - {unit_file.hash})
    missing = sorted(set(old.values()) - {unit_file.hash} - set(bodies))
    if missing:
        raise CommandFailed(f"Error: the body {missing[0]} of a unit to update is missing from the registry")
    return Rollout(
        name, unit_file.hash, unit_file.canonical, tuple(r.name for r in units), old, dict(bodies),
        max_unavailable,
    )


async def _start_global(
    client: FleetClient, record: UnitRecord, unit_file: UnitFile, max_unavailable: int
) -> Rollout:
    """A Global unit's rollout: over the live machines that publish a state for it (those running it)."""
    if not is_global(unit_file, record.name):
        raise CommandFailed(f"Error: {record.name} is a Global unit and the new file is not (Global=true)")
    live = await client.machine_map()
    states = await client.registry.list_unit_states([record.name])
    machines = sorted({s.machine_id for s in states} & set(live))
    if not machines:
        raise CommandFailed(f"Error: no machine runs the Global unit {record.name}; start it first")
    bodies = await client.bodies([record.hash])
    if record.hash not in bodies:
        raise CommandFailed(f"Error: the body {record.hash} of {record.name} is missing from the registry")
    return Rollout(
        record.name, unit_file.hash, unit_file.canonical, (record.name,), {record.name: record.hash},
        dict(bodies), max_unavailable, machines=tuple(machines),
    )


async def _switch_global(client: FleetClient, rollout: Rollout, goal: str) -> None:
    """Give the Global unit the body ``goal`` (one Txn: its record, body, target and globals/ entry)."""
    record = (await client.units([rollout.name])).get(rollout.name)
    if record is None or record.hash == goal:
        return
    text = rollout.body if goal == rollout.hash else rollout.old_bodies.get(goal)
    if text is not None:
        await client.put_units([new_record(rollout.name, checked_unit_file(text), record.target_state)])


async def _template_to(client: FleetClient, rollout: Rollout, goal: str) -> None:
    """Give the template (when the rollout replaced one) the body ``goal``."""
    template = (await client.units([rollout.name])).get(rollout.name)
    if template is None or rollout.name in rollout.units or template.hash == goal:
        return
    text = rollout.body if goal == rollout.hash else rollout.old_bodies.get(goal)
    if text is not None:
        await client.put_units([new_record(rollout.name, checked_unit_file(text), template.target_state)])


@dataclass(frozen=True, slots=True)
class _Options:
    pattern: str
    path: str
    max_unavailable: int
    settings: Settings
    dry_run: bool
    ssh_port: int


async def _roll(client: FleetClient, options: _Options, runner: Runner | None) -> None:
    try:
        unit_file = read_unit_file(options.path)
    except LocalUnitFileError as exc:
        raise CommandFailed(f"Error: {exc}") from exc
    name = _rollout_name(options.path, options.pattern)
    rollout = await _read_rollout(client, name)
    if rollout is not None and rollout.phase not in (DONE, FAILED):
        if rollout.hash != unit_file.hash:
            raise CommandFailed(
                f"Error: an unfinished rolling update of {name} to another body ({rollout.hash[:7]}) is"
                " recorded; run it again with that file to resume, or drop it with"
                f" fleetctl rolling-update --abort {name}"
            )
        say(f"Resuming the rolling update of {name} ({rollout.phase}, {len(rollout.replaced)} replaced)")
    else:
        rollout = await _start(client, name, options.pattern, unit_file, options.max_unavailable)
    shell = _Shell(client, runner, options.ssh_port, options.settings, _checks_of(rollout))
    if rollout.machines:
        await _roll_global(shell, rollout, options.dry_run)
        return
    if options.dry_run:
        steps = dry_run_steps(rollout, await shell.observe(rollout))
        _show_steps(steps, "replace", f"every unit of {name} has the body {unit_file.hash[:7]}")
        return
    if rollout.phase == ROLLING and not rollout.replaced:
        await _write_rollout(client, rollout)
        await _template_to(client, rollout, rollout.hash)
    await _follow(shell, rollout)


async def _steps(shell: _Shell, rollout: Rollout, machines: bool) -> Rollout:
    """Ask, write, wait and ask again until the rollout is finished; its record as it ended. ``machines``:
    a Global unit's rollout (members are machines: unpinned, or pinned back, a step at a time)."""
    step_started = time.monotonic()
    shown = ""
    while True:
        # a HealthCheck= of the new body must pass while rolling; rolling back waits for active units only
        checked = rollout.phase == ROLLING and rollout.hash in shell.checks
        settings = replace(shell.settings, has_check=checked)
        elapsed = time.monotonic() - step_started
        decision: Decision = (
            decide_global(rollout, await shell.observe_machines(rollout), settings, elapsed) if machines
            else decide(rollout, await shell.observe(rollout), settings, elapsed)
        )
        if decision.rollout != rollout:
            if decision.rollout.phase != rollout.phase and decision.rollout.phase not in (DONE, FAILED):
                say(f"Rolling back: {decision.rollout.reason}")
            rollout = decision.rollout
            await _write_rollout(shell.client, rollout)
        if decision.act is Act.REPLACE:
            members = " ".join(decision.units)
            if machines:
                say(f"{'Updating' if rollout.phase == ROLLING else 'Restoring'} {rollout.name} on {members}")
                rollout = await shell.replace_machines(rollout, [MachineID(m) for m in decision.units])
            else:
                say(f"{'Replacing' if rollout.phase == ROLLING else 'Restoring'} {members}")
                rollout = await shell.replace_units(rollout, decision.units)
            step_started, shown = time.monotonic(), ""
        elif decision.act is Act.WAIT:
            if decision.why != shown:
                say(f"Waiting: {decision.why}")
                shown = decision.why
            await asyncio.sleep(POLL)
        else:
            return rollout


def _failed(rollout: Rollout) -> CommandFailed:
    return CommandFailed(
        f"Error: rolling update of {rollout.name} failed and was rolled back: {rollout.reason}"
    )


def _show_steps(steps: Sequence[Sequence[str]], verb: str, nothing: str) -> None:
    """--dry-run: each step, or why there is nothing to do."""
    for index, step in enumerate(steps, 1):
        say(f"Step {index}/{len(steps)}: {verb} {' '.join(step)}")
    if not steps:
        say(f"Nothing to do: {nothing}")


async def _follow(shell: _Shell, rollout: Rollout) -> None:
    rollout = await _steps(shell, rollout, machines=False)
    if rollout.phase == DONE:
        say(f"Rolled out {rollout.name} ({rollout.hash[:7]}) to {len(rollout.units)} units")
        return
    await _template_to(shell.client, rollout, rollout.old.get(rollout.name, rollout.hash))
    raise _failed(rollout)


async def _roll_global(shell: _Shell, rollout: Rollout, dry_run: bool) -> None:
    """A Global unit, machine by machine: pin every machine to the old hash, switch the unit to the new
    body, then unpin a step of machines at a time (``decide_global``)."""
    client = shell.client
    if dry_run:
        steps = global_steps(rollout, await shell.observe_machines(rollout))
        done = f"every machine runs {rollout.name} with the body {rollout.hash[:7]}"
        _show_steps(steps, f"update {rollout.name} on", done)
        return
    if rollout.phase == ROLLING and not rollout.machines_replaced:
        await _write_rollout(client, rollout)
        await client.registry.set_pins(rollout.name, rollout.machines, rollout.old[rollout.name])
        await _switch_global(client, rollout, rollout.hash)
    rollout = await _steps(shell, rollout, machines=True)
    if rollout.phase == DONE:
        await client.registry.unpin(rollout.name, rollout.machines)  # none left but a stray one
        say(f"Rolled out {rollout.name} ({rollout.hash[:7]}) to {len(rollout.machines)} machines")
        return
    await _switch_global(client, rollout, rollout.old[rollout.name])
    await client.registry.unpin(rollout.name, rollout.machines)
    raise _failed(rollout)


async def _abort(client: FleetClient, name: UnitName) -> str:
    """Drop the record of ``name``'s update; a Global unit's machines still held at the old file by pins
    are released to follow the unit's file (pins first: an interrupted abort can be run again)."""
    registry = client.registry
    found = await registry.kv.get(registry.keys.rollout(name))
    if found is None:
        return f"No rolling update of {name}"
    try:
        machines: Sequence[str] = records.decode_rollout(found.key, found.value).machines
    except BadRecord:  # which machines it pinned is unknown: release the unit's pins on every machine
        machines = await registry.machine_ids()
    pinned = await registry.get_pins(name, machines) if machines else {}
    if pinned:
        await registry.unpin(name, pinned)
    await registry.kv.delete(registry.keys.rollout(name))
    if not pinned:
        return f"Dropped the rolling update of {name}"
    return f"Dropped the rolling update of {name}; released {len(pinned)} machines held at the old file"


def _runner_factory(ctx: click.Context) -> RunnerFactory:
    return getattr(app_of(ctx), "remote_runner", None) or default_runner


@click.command("rolling-update", cls=FleetCommand)
@click.option("--max-unavailable", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="Units replaced at once (each step waits until they are healthy).")
@click.option("--min-healthy-time", type=Seconds(HEALTHY_BOUNDS), default=0.0, show_default=True,
              help="How long a replaced unit must stay active to count as healthy (e.g. 10s).")
@click.option("--step-timeout", type=Seconds(STEP_BOUNDS), default=300.0, show_default=True,
              help="How long a step may take to become healthy before the update is rolled back.")
@click.option("--dry-run", is_flag=True, help="Print the steps and write nothing.")
@click.option("--abort", is_flag=True,
              help="Drop the record of an unfinished update of UNITS (units stay; a Global unit's machines"
                   " held at the old file follow its current file).")
@click.option("--ssh-port", type=SSH_PORT, default=DEFAULT_SSH_PORT, show_default=True,
              help="SSH port of the machines (for HealthCheck= commands).")
@click.argument("units")
@click.argument("file", required=False)
@click.pass_context
def rolling_update(  # noqa: PLR0917 (click passes options as keywords)
    ctx: click.Context, max_unavailable: int, min_healthy_time: float, step_timeout: float, dry_run: bool,
    abort: bool, ssh_port: int, units: str, file: str | None,
) -> None:
    """Give running units a new unit file, a few at a time, rolling back on failure.

    UNITS names the units to update: instances of FILE's template (a glob such as 'web@*') or, for a plain
    unit file, the unit itself. Each step replaces --max-unavailable units (units already down first), then
    waits until each is active and healthy: its [X-Fleet] HealthCheck= command (run on the unit's machine
    over SSH) exits 0 and it stayed active --min-healthy-time. A unit that fails, or a step not healthy
    within --step-timeout, rolls the replaced units back to their old file, step by step, and the command
    fails naming why. Progress is kept in etcd (rollouts/NAME): run the same command again to resume after
    an interruption. A replaced unit keeps its machine when it can; its agent restarts it with the new file.
    A Global unit (UNITS is its name) is updated machine by machine: every machine running it is held at
    the old file by a hash pin, the unit gets the new file, and each step releases --max-unavailable
    machines; a roll back pins the released machines to the old file again.

    \b
    Examples:
      fleetctl rolling-update 'web@*' ./web@.service
      fleetctl rolling-update --max-unavailable 2 --min-healthy-time 10s 'web@*' web@.service
      fleetctl rolling-update --dry-run db.service ./db.service
      fleetctl rolling-update --max-unavailable 1 monitor.service ./monitor.service
      fleetctl rolling-update --abort web@.service
    """
    if abort:
        name = UnitName(mangle(units))
        say(run(ctx, lambda client: _abort(client, name)))
        return
    if file is None:
        raise UsageFailed("rolling-update needs UNITS and the new unit FILE")
    settings = Settings(min_healthy_time, False, step_timeout)
    options = _Options(units, file, max_unavailable, settings, dry_run, ssh_port)
    app = app_of(ctx)

    async def action(client: FleetClient) -> None:
        with _runner(ctx, app.options, dry_run) as runner:
            await _roll(client, options, runner)

    run(ctx, action)


class _NoRunner(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None


def _runner(ctx: click.Context, options: object, dry_run: bool) -> AbstractContextManager[Runner | None]:
    if dry_run:
        return _NoRunner()
    return _runner_factory(ctx)(app_of(ctx).options, False, False)


COMMANDS = [rolling_update]
