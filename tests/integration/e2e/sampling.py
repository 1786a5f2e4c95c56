"""Watching systemd in every machine while faults happen: which units stopped, moved or ran twice.

``sampling(fleet, units, tally)`` runs a thread that reads ``systemctl show`` (ActiveState, MainPID,
ActiveEnterTimestamp) in each machine about twice a second until its block ends, so a unit stopped and
started again between two fleetctl reads, or briefly running in two machines, is still seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.integration.e2e.harness import FleetCluster
from tests.integration.e2e.waits import wait_for_active

__all__ = ["Run", "Tally", "Timeline", "placement", "sampling", "systemd_runs"]

SAMPLE = 0.5  # seconds between systemd samples
RECOVERY = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    """One unit active in one machine, as systemd sees it."""

    machine: str  # machine ID
    pid: str
    since: str  # ActiveEnterTimestamp


def systemd_runs(fleet: FleetCluster, units: Sequence[str]) -> dict[str, list[Run]]:
    """unit -> every run of it that systemd reports active, over all machines (one call per machine)."""
    runs: dict[str, list[Run]] = {unit: [] for unit in units}
    for machine in fleet.machines:
        out = machine.run(
            ["systemctl", "show", "-p", "Id,ActiveState,MainPID,ActiveEnterTimestamp", *units], timeout=30
        ).stdout
        for block in out.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if props.get("Id") in runs and props.get("ActiveState") == "active":
                run = Run(machine.machine_id, props["MainPID"], props["ActiveEnterTimestamp"])
                runs[props["Id"]].append(run)
    return runs


@dataclass
class Tally:
    """What the sampler saw during one run, against the runs recorded before it."""

    baseline: dict[str, Run]
    samples: int = 0
    stopped: set[str] = field(default_factory=set)  # not active, or active as another process, at a sample
    doubled: set[str] = field(default_factory=set)  # active in two machines at once at a sample

    def add(self, runs: dict[str, list[Run]]) -> None:
        self.samples += 1
        for unit, seen in runs.items():
            if seen != [self.baseline[unit]]:
                self.stopped.add(unit)
            if len({run.machine for run in seen}) > 1:
                self.doubled.add(unit)


@contextmanager
def sampling(fleet: FleetCluster, tally: Tally) -> Iterator[None]:
    """Sample systemd on every machine into ``tally`` until the block ends (the thread is always joined)."""
    done = threading.Event()
    errors: list[BaseException] = []

    def sample() -> None:
        while not done.is_set():
            try:
                tally.add(systemd_runs(fleet, sorted(tally.baseline)))
            except Exception as exc:  # reported after the join: a sampler failure must fail the test
                errors.append(exc)
                return
            done.wait(SAMPLE)

    thread = threading.Thread(target=sample, name="systemd-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, f"sampling systemd failed: {errors[0]!r}"


def placement(fleet: FleetCluster, units: Sequence[str]) -> dict[str, Run]:
    """Each of ``units`` (all of the cluster's units) runs once; fleetctl and systemd agree on where."""
    listed = wait_for_active(fleet, len(units), timeout=RECOVERY)
    runs = systemd_runs(fleet, units)
    for unit in units:
        assert len(runs[unit]) == 1, f"{unit} runs {len(runs[unit])} times: {runs[unit]}"
        where = [runs[unit][0].machine]
        assert listed[unit] == where, f"{unit}: fleetctl {listed[unit]}, systemd {runs[unit]}"
    return {unit: runs[unit][0] for unit in units}


@dataclass
class Timeline(Tally):
    """A Tally that also keeps every sample with its time (``time.monotonic()``), for windows."""

    seen: list[tuple[float, dict[str, list[Run]]]] = field(default_factory=list)

    def add(self, runs: dict[str, list[Run]]) -> None:
        super().add(runs)
        self.seen.append((time.monotonic(), runs))

    def first(self, unit: str, where: Callable[[list[Run]], bool], after: float = 0.0) -> float | None:
        """The time of the first sample after ``after`` whose runs of ``unit`` satisfy ``where``."""
        return next((at for at, runs in self.seen if at >= after and where(runs[unit])), None)

    def doubled_window(self, unit: str) -> tuple[int, float]:
        """(samples that saw ``unit`` active in two machines, an upper bound of how long it was): each
        stretch of such samples counts from the sample before it to the sample after it."""
        count, window = 0, 0.0
        previous = self.seen[0][0] if self.seen else 0.0
        start: float | None = None
        for at, runs in self.seen:
            doubled = len({run.machine for run in runs[unit]}) > 1
            if doubled:
                count += 1
                start = previous if start is None else start
            elif start is not None:
                window += at - start
                start = None
            previous = at
        if start is not None:
            window += previous - start
        return count, window
