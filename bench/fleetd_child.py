"""The process ``bench.fleetd_rss`` measures: fleetd itself (``bench.fleetd_proc.run_fleetd``: configuration,
one EtcdKV, the Agent and the Engine as fleetd wires them, the HTTP API on a unix socket as fleetd serves it
by default) with a fake systemd, printing its VmRSS (and VmHWM, the peak) as one JSON line once settled.

This module imports nothing of the benchmark harness (etcd control, fill, the simulator): what the process
holds is fleetd's. Modes: ``standby`` (settled when its agent is registered and its engine candidate knows
another leader), ``leader`` (settled when it leads, has planned, and a later wake-up had nothing new),
``anchor`` (a standby with a mirroring engine, ``bench.engines.MirroringEngine``: standby mirrors on).

    python -m bench.fleetd_child standby|leader|anchor      (with BENCH_ETCD set)
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fleetd_proc import run_fleetd, status_mb

if TYPE_CHECKING:
    from fleetd.engine.engine import Engine
    from fleetd.server import Components
    from fleetd.systemd.fake import FakeUnitManager

__all__ = ["MACHINES", "SETTLE", "child"]

SETTLE = 2.0
MACHINES = {"standby": "5ba9db1e", "anchor": "a9c40000", "leader": "1eade700"}  # x4: a machine ID


def child(mode: str) -> int:
    """Run fleetd in ``mode``; print its figures once settled."""
    engine_class = None
    if mode == "anchor":
        from bench.engines import MirroringEngine  # noqa: PLC0415 - the anchor alone loads it

        engine_class = MirroringEngine

    async def report(components: Components, _manager: FakeUnitManager, engine: Engine) -> None:
        agent = components.agent
        started = time.monotonic()

        def settled() -> bool:
            if not agent.registered:
                return False
            if mode == "leader":
                return engine.is_leader and engine.passes >= 1 and engine.skipped >= 1
            if engine.election.leader is None or engine.is_leader:
                return False
            standby = getattr(engine, "standby_mirror", None)
            return mode != "anchor" or (standby is not None and standby.ready.is_set())

        while not settled():  # noqa: ASYNC110 - flags and counters of three components
            await asyncio.sleep(0.1)
        ready = time.monotonic() - started
        await asyncio.sleep(SETTLE)
        gc.collect()
        figures: dict[str, Any] = {
            "mode": mode,
            "rss_mb": status_mb("VmRSS"),
            "hwm_mb": status_mb("VmHWM"),
            "anon_mb": status_mb("RssAnon"),
            "settled_s": ready,
            "leader": engine.is_leader,
            "modules": sorted(
                name for name in sys.modules if name != "__main__" and name.partition(".")[0] != "bench"
            ),
        }
        print(json.dumps(figures), flush=True)

    with tempfile.TemporaryDirectory(prefix="fleet-rss-") as tmp:
        api_socket = str(Path(tmp) / "fleet.sock")
        return run_fleetd(MACHINES[mode] * 4, report, engine_class, api_socket=api_socket)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1]))
