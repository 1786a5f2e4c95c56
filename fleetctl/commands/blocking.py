"""Waiting for units (spec §1.6): the --no-block/--block-attempts/--timeout flags, the wait itself with its
report lines (``Unit X launched on 1a2b3c4d.../10.0.0.1``) and a live progress count on a terminal.

A start ends early when systemd reports the unit failed (``loaded/failed/failed``): the error names systemd's
states, the machine, and the command that shows why (``fleetctl journal UNIT``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from fleetctl.client import FleetClient, Goal, UnitFailed, WaitTimeout
from fleetctl.context import App, CommandFailed
from fleetctl.output import machine_legend, say
from fleetctl.params import Seconds
from fleetd.model import MachineID, MachineState, UnitState
from fleetd.values import Bounds

__all__ = ["Budget", "block_options", "budget_for", "report_triggered", "wait_for"]

F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_MIN_UNITS = 2  # a progress line for one unit would only flicker
MAX_BLOCK_ATTEMPTS = 43_200  # 24 hours of 2-second attempts; more is a typo, not a plan
TIMEOUT_BOUNDS = Bounds(0.0, 86_400.0)  # --timeout: 0 (no limit) .. 24h

Budget = float | None  # seconds to wait; None waits until the units get there


def block_options(f: F) -> F:
    """--no-block, --block-attempts and --timeout; the command receives ``no_block``, ``block_attempts``
    and ``timeout`` (turn the last two into a Budget with ``budget_for``)."""
    f = click.option(
        "--timeout",
        type=Seconds(TIMEOUT_BOUNDS),
        default=None,
        metavar="DURATION",
        help="Give up waiting after DURATION (seconds, or 30s, 2m); overrides --block-attempts; 0: no limit.",
    )(f)
    f = click.option(
        "--no-block", is_flag=True, help="Do not wait until the units reach the requested state."
    )(f)
    return click.option(
        "--block-attempts",
        type=click.IntRange(max=MAX_BLOCK_ATTEMPTS),
        default=0,
        show_default=True,
        help="Wait budget in attempts of 2 seconds; 0 or less waits forever.",
    )(f)


def budget_for(app: App, attempts: int, timeout: float | None = None) -> Budget:
    """The wait budget in seconds: ``--timeout`` when given (0: none), else ``attempts`` attempts, else None
    (until the units get there, or fail)."""
    if timeout is not None:
        return timeout or None
    return attempts * app.attempt_seconds if attempts > 0 else None


def _journal_hint(name: str) -> str:
    return f"see its journal: fleetctl journal {name}"


def report_triggered(names: Sequence[str], verb: str, *, is_global: bool = False) -> None:
    kind = "global unit" if is_global else "unit"
    for name in names:
        say(f"Triggered {kind} {name} {verb}")


class _Progress:
    """``Waiting for units: 3/10`` redrawn in place on a terminal; erased before any other line."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def draw(self, done: int, total: int) -> None:
        if self.enabled and done < total:
            click.echo(f"\r\x1b[KWaiting for units: {done}/{total} done", nl=False, color=True)
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo("\r\x1b[K", nl=False, color=True)
            self.shown = False


async def wait_for(
    client: FleetClient,
    app: App,
    goals: Sequence[Goal],
    *,
    budget: Budget,
    failure: Callable[[str], str] = lambda problem: f"Error waiting for units: {problem}",
    quiet: bool = False,
) -> None:
    """Wait for every goal, printing ``Unit <name> <state>[ on <machine>]`` as each is met (unless
    ``quiet``); raises CommandFailed with ``failure(reason)`` when the budget runs out."""
    if not goals:
        return
    machines: dict[MachineID, MachineState] = {} if quiet else await client.machine_map()
    progress = _Progress(app.is_tty and len(goals) >= PROGRESS_MIN_UNITS and not quiet)
    printed: set[str] = set()
    by_name = {goal.name: goal for goal in goals}

    def on_progress(done: int, total: int, met: dict[str, UnitState | None]) -> None:
        progress.clear()
        if not quiet:
            for name in sorted(set(met) - printed):
                printed.add(name)
                say(_report_line(by_name[name], met[name], machines))
        progress.draw(done, total)

    try:
        await client.wait(goals, budget=budget, progress=on_progress)
    except WaitTimeout as exc:
        progress.clear()
        problem = str(exc)
        if exc.goal.active and exc.last:
            problem += f"; {_journal_hint(exc.goal.name)}"
        raise CommandFailed(failure(problem)) from exc
    except UnitFailed as exc:
        progress.clear()
        if not machines:
            machines = await client.machine_map()
        problems = [_failure_line(goal, seen, machines) for goal, seen in exc.failures]
        raise CommandFailed(failure("; ".join(problems))) from exc
    progress.clear()


def _failure_line(goal: Goal, seen: UnitState, machines: dict[MachineID, MachineState]) -> str:
    machine = machines.get(seen.machine_id)
    where = machine_legend(seen.machine_id, machine.public_ip if machine else "", full=False)
    return (
        f"unit {goal.name} failed to start on {where}"
        f" (systemd: {seen.load_state}/{seen.active_state}/{seen.sub_state}); {_journal_hint(goal.name)}"
    )


def _report_line(goal: Goal, state: UnitState | None, machines: dict[MachineID, MachineState]) -> str:
    line = f"Unit {goal.name} {goal.state.value}"
    if state is not None and state.machine_id:
        machine = machines.get(state.machine_id)
        line += f" on {machine_legend(state.machine_id, machine.public_ip if machine else '', full=False)}"
    return line
