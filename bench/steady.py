"""Agent steady state: a fleetd-like process with 100 running units, idle.

Targets (issue 5): 0 etcd writes per minute, at most 1 D-Bus call (the batched states() resync) per resync
period, RSS <= 80 MB. The child process is fleetd itself (``fleetd.server.main``: configuration, EtcdKV,
Agent, Engine; the D-Bus adapter imported as in production) with one difference, the unit manager: a
FakeUnitManager whose calls are counted stands in for systemd. The parent starts etcd, submits the units,
runs the child and reads the figures it prints as one JSON line.

    .venv/bin/python -m bench steady [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cluster_sim import PREFIX, unit
from bench.fleetd_proc import run_fleetd, status_mb
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry

if TYPE_CHECKING:
    from fleetd.engine.engine import Engine
    from fleetd.server import Components
    from fleetd.systemd.fake import FakeUnitManager

__all__ = ["child", "run"]

UNITS = 100
RSS_TARGET_MB = 80.0


def child(window: float) -> int:
    """Run fleetd with a counted fake systemd; print the figures after ``window`` idle seconds; stop."""

    async def measure(components: Components, manager: FakeUnitManager, _engine: Engine) -> None:
        agent = components.agent
        deadline = time.monotonic() + 120
        while len(agent.publisher.published) < UNITS or agent.publisher.dirty:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # let the last publish and the engine's next tick pass
        kv = components.kv
        schema = agent._registry.keys.schema
        before = (await kv.range(schema)).revision
        calls = len(manager.calls)
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        after = (await kv.range(schema)).revision
        during = manager.calls[calls:]
        figures = {
            "running": sum(manager._state(n).active_state == "active" for n in manager.loaded_units()),
            "window": elapsed,
            "writes": after - before,
            "states_calls": sum(c[0] == "states" for c in during),
            "other_calls": sum(c[0] != "states" for c in during),
            "rss_mb": status_mb("VmRSS"),
            "hwm_mb": status_mb("VmHWM"),
        }
        print(json.dumps(figures), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    return run_fleetd("5eadbeef" * 4, measure)


async def _submit(endpoint: str) -> None:
    kv = EtcdKV([endpoint], request_timeout=30.0)
    try:
        registry = Registry(kv, PREFIX)
        await registry.ensure_schema()
        await registry.put_units([unit(f"steady-{i:03}.service") for i in range(UNITS)])
    finally:
        await kv.close()


def run(quick: bool) -> list[Figure]:
    window = 20.0 if quick else 60.0
    with EtcdServer() as etcd:
        asyncio.run(_submit(etcd.endpoint))
        proc = subprocess.run(
            [sys.executable, "-m", "bench.steady", "--child", str(window)],
            env={**os.environ, "BENCH_ETCD": etcd.endpoint},
            capture_output=True,
            text=True,
            timeout=window + 300,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"steady-state child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    got = json.loads(lines[-1])
    print(f"steady: {got}", flush=True)
    minutes = got["window"] / 60
    periods = got["window"] / 10.0  # the agent's resync period
    per_minute = got["writes"] / minutes
    per_period = got["states_calls"] / periods
    return [
        Figure(
            "steady",
            f"etcd writes per minute, agent with {got['running']} running units (+ engine)",
            "0",
            f"{per_minute:.1f}",
            got["writes"] == 0,
            f"{got['writes']} in {got['window']:.0f} s",
        ),
        Figure(
            "steady",
            "systemd calls per 10 s resync period (batched states())",
            "<= 1",
            f"{per_period:.2f}",
            per_period <= 1.0 and got["other_calls"] == 0,
            f"{got['states_calls']} states() + {got['other_calls']} other calls in {got['window']:.0f} s",
        ),
        Figure(
            "steady",
            "RSS of the fleetd process (agent + engine + etcd client, D-Bus adapter imported)",
            f"<= {RSS_TARGET_MB:.0f} MB",
            f"{got['rss_mb']:.1f} MB",
            got["rss_mb"] <= RSS_TARGET_MB,
            f"peak {got['hwm_mb']:.1f} MB",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(float(sys.argv[2])))
    for f in run("--quick" in sys.argv):
        print(f.line())
