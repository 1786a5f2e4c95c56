"""Leader failover with 100,000 units: real fleetd processes, the leader killed (kill -9) at a random point
of its keep-alive period; time until the next fleetd has listed the registry into its mirror and planned.

Target (issue 15): within the engine lease TTL + 5 s, 0 double placements. ``failover`` kills simulated
leaders of 10,000-unit clusters 30 times; this runs the same kill at the registry size of the target, with
the composition fleetd runs: each candidate a whole fleetd process (``bench.fleetd_proc``: configuration,
agent, engine, etcd client; a fake systemd), its default engine lease (5 reconcile intervals: 10 s).

Method: the parent fills one etcd (``bench.fill``: machine records under one lease, 100,000 units placed by
a fill engine that then resigns). Child A starts and leads (it lists and plans); child B starts and stands
by. At a random point of A's keep-alive period the parent sends A SIGKILL, so its leader key lasts until
etcd expires its lease; B reports when it completes its first pass as leader (``bench.engines.SimEngine``'s
pass end, CLOCK_MONOTONIC, which every process shares). Then a new child stands by beside B, B is killed,
and so on. After each failover ``schedule/`` is read for units scheduled twice.

    .venv/bin/python -m bench failover_big [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.budgets import BUDGETS
from bench.cluster_sim import PREFIX
from bench.fill import Filled
from bench.fleetd_proc import run_fleetd
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry

if TYPE_CHECKING:
    from fleetd.engine.engine import Engine
    from fleetd.server import Components
    from fleetd.systemd.fake import FakeUnitManager

__all__ = ["child", "run"]

ROOT = Path(__file__).resolve().parents[1]
ENGINE_TTL = 10.0  # fleetd's default: 5 x the 2 s reconcile interval
SLACK = 5.0


def child(machine_hex: str) -> int:
    """A fleetd (SimEngine) printing a JSON line when it stands by and one per pass it completes leading."""
    from bench.engines import SimEngine  # noqa: PLC0415

    async def report(components: Components, _manager: FakeUnitManager, engine: Engine) -> None:
        assert isinstance(engine, SimEngine)
        said_standby = said_won = False
        seen = 0
        while True:
            if not said_standby and components.agent.registered and engine.election.leader not in (
                None, engine.machine_id
            ):
                print(json.dumps({"standby": time.monotonic()}), flush=True)
                said_standby = True
            if said_standby and not said_won and engine.is_leader:  # seen within this loop's 20 ms
                print(json.dumps({"won": time.monotonic()}), flush=True)
                said_won = True
            if len(engine.pass_ends) > seen:
                seen = len(engine.pass_ends)
                print(json.dumps({"planned": engine.pass_ends[-1], "leader": engine.is_leader}), flush=True)
            await asyncio.sleep(0.02)

    return run_fleetd(machine_hex, report, SimEngine)


class _Child:
    """One fleetd child process and the JSON lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, endpoint: str, machine_hex: str) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.failover_big", "--child", machine_hex,
            env={**os.environ, "BENCH_ETCD": endpoint}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if line.startswith(b"{"):
                self.lines.append(json.loads(line))
                self.changed.set()

    async def first(self, field: str, limit: float, after: float = 0.0) -> float | None:
        """The value of the first line with ``field`` (greater than ``after``), waiting up to ``limit`` s."""
        try:
            async with asyncio.timeout(limit):
                while True:
                    for line in self.lines:
                        if field in line and line[field] > after and line.get("leader", True):
                            return float(line[field])
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return None

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self._reader.cancel()


async def _doubles(registry: Registry) -> int:
    return sum(len(entries) > 1 for entries in (await registry.list_schedule()).values())


async def _run(machines: int, units: int, kills: int, budget: float) -> list[Figure]:
    rng = random.Random(15)
    started = time.monotonic()
    times: list[float] = []
    listed: list[float] = []  # seconds from winning the election to the first pass done
    doubles = 0
    children: list[_Child] = []
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        kv = EtcdKV([etcd.endpoint], request_timeout=120.0)
        try:
            async with Filled(kv, PREFIX, machines) as filled:
                fill_s = await filled.add_units(units)
                await filled.stop_engine()
                leader = await _Child.start(etcd.endpoint, f"{0:08x}" * 4)
                children.append(leader)
                if await leader.first("planned", 300) is None:
                    raise RuntimeError("the first fleetd did not lead and plan")
                for trial in range(1, kills + 1):
                    if time.monotonic() - started > budget:
                        break
                    standby = await _Child.start(etcd.endpoint, f"{trial:08x}" * 4)
                    children.append(standby)
                    if await standby.first("standby", 120) is None:
                        raise RuntimeError("the standby fleetd did not settle")
                    await asyncio.sleep(rng.uniform(0, ENGINE_TTL / 3))  # a point of a keep-alive period
                    killed = time.monotonic()
                    await leader.kill()
                    planned = await standby.first("planned", 120, after=killed)
                    won = await standby.first("won", 1, after=killed)
                    times.append(float("inf") if planned is None else planned - killed)
                    if planned is not None and won is not None:
                        listed.append(planned - won)
                    doubles += await _doubles(filled.registry)
                    print(
                        f"failover_big: kill {trial}: planned {times[-1]:.1f} s after it"
                        f" ({listed[-1] if listed else float('nan'):.1f} s after winning)", flush=True,
                    )
                    leader = standby
        finally:
            for one in children:
                await one.kill()
            await kv.close()
    target = ENGINE_TTL + SLACK
    worst = max(times, default=float("inf"))
    return [
        Figure(
            "failover_big",
            f"leader fleetd killed (kill -9) at a random point of its keep-alive period, {units:,} units on"
            f" {machines:,} machines, real fleetd processes: new leader has listed and planned",
            f"<= {target:.0f} s (engine TTL + {SLACK:.0f} s), 0 double placements",
            f"max {worst:.1f} s, {doubles} double placements",
            bool(times) and worst <= target and doubles == 0,
            f"p50 {statistics.median(times):.1f} s over {len(times)} kills, of which listing and the first"
            f" pass after winning p50 {statistics.median(listed) if listed else float('nan'):.1f} s;"
            f" fill {fill_s:.0f} s"
            if times else "no kill made (time budget)",
        )
    ]


def run(quick: bool) -> list[Figure]:
    machines, units, kills = (50, 2_000, 2) if quick else (1_000, 100_000, 3)
    return asyncio.run(_run(machines, units, kills, BUDGETS["failover_big"]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    for f in run("--quick" in sys.argv):
        print(f.line())
