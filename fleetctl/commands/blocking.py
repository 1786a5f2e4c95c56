"""Waiting for units (spec §1.6): the --no-block/--block-attempts/--timeout flags, the wait itself with its
report lines (``Unit X launched on 1a2b3c4d.../10.0.0.1``) and, on a terminal only, one progress line redrawn
in place with what the wait is at and the time it has taken
(``waiting for hello.service: launched on 1a2b3c4d, systemd activating/start (3.2s)``). Without a terminal
scripts see only the original's lines.

A start ends early when systemd reports the unit failed (``loaded/failed/failed``): the error names systemd's
states, the machine, and the command that shows why (``fleetctl journal UNIT``). A load or start also ends
as soon as the engine publishes that no machine can run the unit, with the engine's reason."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from fleetctl.client import FleetClient, Goal, UnitFailed, UnitUnplaceable, WaitTimeout, unit_state_feed
from fleetctl.context import App, CommandFailed
from fleetctl.output import machine_legend, say, short_hash, visible
from fleetctl.params import Seconds
from fleetd.cancel import cancel_and_wait
from fleetd.errors import FleetError
from fleetd.model import SHORT_ID_LENGTH, MachineID, MachineState, UnitState
from fleetd.values import Bounds

__all__ = ["Budget", "block_options", "budget_for", "progress_line", "report_triggered", "wait_for"]

F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_TICK = 0.1  # seconds between redraws of the progress line's elapsed time
ERASE_LINE = "\r\x1b[K"  # carriage return, erase to the end of the line
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


def progress_line(
    pending: Sequence[Goal], done: int, total: int, latest: Mapping[str, Sequence[UnitState]], elapsed: float
) -> str:
    """What a wait is at, for the progress line: the first unit still pending (by name), where it last
    reported and systemd's states there (preferring a record of the version waited for, as the wait does),
    how many are done when there are several, and the time taken.

    ``waiting for hello.service: launched on 1a2b3c4d, systemd activating/start (3.2s)``;
    ``waiting for hello@2.service (1/3 done): no state reported yet (0.4s)``."""
    goal = min(pending, key=lambda pending_goal: pending_goal.name)
    count = f" ({done}/{total} done)" if total > 1 else ""
    states = latest.get(goal.name, ())
    current = [state for state in states if not goal.hash or state.hash == goal.hash]
    if states:
        seen = (current or states)[0]
        where = f"{seen.state.value} on {seen.machine_id[:SHORT_ID_LENGTH]}"
        status = f"{where}, systemd {seen.active_state or '-'}/{seen.sub_state or '-'}"
        if not current:  # what the wait ignores: the machine still runs another version of the unit
            status += f", older version {short_hash(seen.hash, full=False) or '-'}"
    else:
        status = "no state reported yet"
    return f"waiting for {goal.name}{count}: {status} ({elapsed:.1f}s)"


class _Progress:
    """The progress line on a terminal: redrawn in place on every change the wait sees and every
    PROGRESS_TICK (for the elapsed time), cut to the terminal's width so it stays one line, and erased
    before any other line and at the end. Disabled, it prints nothing and watches nothing."""

    def __init__(
        self, enabled: bool, goals: Sequence[Goal], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = enabled
        self.goals = tuple(goals)
        self.clock = clock
        self.started = clock()
        self.met: set[str] = set()
        self.latest: dict[str, list[UnitState]] = {}
        self.shown = False

    def draw(self) -> None:
        pending = [goal for goal in self.goals if goal.name not in self.met]
        if not self.enabled or not pending:
            return
        line = progress_line(
            pending, len(self.met), len(self.goals), self.latest, self.clock() - self.started
        )
        width = shutil.get_terminal_size().columns - 1
        click.echo(ERASE_LINE + visible(line)[:width], nl=False, color=True)
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo(ERASE_LINE, nl=False, color=True)
            self.shown = False

    async def run(self, client: FleetClient) -> None:
        """Keep the line current until cancelled: one watch on the units' states (the wait has its own;
        this one only feeds the display) and a redraw every PROGRESS_TICK."""
        feed = asyncio.create_task(self._follow(client))
        try:
            while True:
                self.draw()
                await asyncio.sleep(PROGRESS_TICK)
        finally:
            await cancel_and_wait(feed)

    async def _follow(self, client: FleetClient) -> None:
        try:
            async for states in unit_state_feed(client, sorted(goal.name for goal in self.goals)):
                latest: dict[str, list[UnitState]] = {}
                for state in states:
                    latest.setdefault(state.name, []).append(state)
                self.latest = latest
                self.draw()
        except FleetError:
            return  # the display goes without states; the wait itself reports registry failures


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
    progress = _Progress(app.is_tty and not quiet, goals)
    printed: set[str] = set()
    by_name = {goal.name: goal for goal in goals}

    def on_progress(_done: int, _total: int, met: dict[str, UnitState | None]) -> None:
        progress.clear()
        progress.met = set(met)
        if not quiet:
            for name in sorted(set(met) - printed):
                printed.add(name)
                say(_report_line(by_name[name], met[name], machines))
        progress.draw()

    display = asyncio.create_task(progress.run(client)) if progress.enabled else None
    try:
        await client.wait(goals, budget=budget, progress=on_progress)
    except WaitTimeout as exc:
        problem = str(exc)
        if exc.goal.active and exc.last:
            problem += f"; {_journal_hint(exc.goal.name)}"
        raise CommandFailed(failure(problem)) from exc
    except UnitUnplaceable as exc:
        problems = [f"unit {goal.name} cannot be placed: {why}" for goal, why in exc.reasons]
        raise CommandFailed(failure("; ".join(visible(p) for p in problems))) from exc
    except UnitFailed as exc:
        if not machines:
            machines = await client.machine_map()
        problems = [_failure_line(goal, seen, machines) for goal, seen in exc.failures]
        raise CommandFailed(failure("; ".join(problems))) from exc
    finally:  # also on Ctrl-C: the line is gone before "Interrupted"
        if display is not None:
            await cancel_and_wait(display)
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
