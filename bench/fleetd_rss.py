"""One fleetd process beside a large cluster: its RSS as a standby and as the leader, and the watchers it
holds.

Method: the parent starts etcd and fills it (``bench.fill``): machine records, units submitted and placed by
a leading engine in the parent. Then it runs a child process that is fleetd itself (``bench.fleetd_child``:
``fleetd.server.main`` with configuration, one EtcdKV, the Agent, the Engine and the API socket as fleetd
wires them, and nothing of the harness imported) with one difference, the unit manager: a FakeUnitManager
stands in for systemd (no unit is scheduled to the child's machine, so the agent holds nothing; the figure
is the engine's). The child prints its VmRSS (and VmHWM, the peak) as one JSON line once settled:

- standby: the parent's engine leads; settled when the child's agent is registered and its engine candidate
  knows the leader. While it runs, the parent reads etcd's ``etcd_debugging_mvcc_watcher_total``: the
  watchers the child added are the watchers one standby fleetd holds.
- leader: the parent's engine resigns first, so the child wins the election, lists the registry into its
  mirror and plans; settled when a pass found everything placed and a later wake-up had nothing new.
- anchor: a standby whose engine is a ``bench.engines.MirroringEngine`` (standby mirrors on, as before
  issue 15), settled when its mirror is listed.

    .venv/bin/python -m bench fleetd_rss [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.cluster_sim import PREFIX
from bench.fill import Filled
from bench.fleetd_child import SETTLE
from bench.herd import metric
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
STANDBY_TARGET_MB, LEADER_TARGET_MB = 40.0, 300.0


IMPORTS_ONLY = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
print(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
"""


def imports_only_mb(modules: list[str]) -> float:
    """VmRSS of a new interpreter that imports ``modules`` and does nothing else: what a fleetd process
    costs before it holds anything (the interpreter, asyncio, gRPC and protobuf, dbus-fast)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS_ONLY, *modules], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return int(out.stdout.strip()) / 1024


async def _child(endpoint: str, mode: str, limit: float) -> tuple[dict[str, Any], float]:
    """Run a child until it reports; (its figures, watchers it added while running)."""
    before = metric(endpoint, "etcd_debugging_mvcc_watcher_total")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fleetd_child", mode,
        env={**os.environ, "BENCH_ETCD": endpoint}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(limit):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise RuntimeError(f"fleetd child ({mode}) exited: {err.decode()[-2000:]}")
                if line.startswith(b"{"):
                    break
        got: dict[str, Any] = json.loads(line)
        watchers = metric(endpoint, "etcd_debugging_mvcc_watcher_total") - before
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return got, watchers


async def _run(machines: int, units: int, limit: float) -> list[Figure]:
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        kv = EtcdKV([etcd.endpoint], request_timeout=60.0)
        try:
            async with Filled(kv, PREFIX, machines) as filled:
                fill_s = await filled.add_units(units)
                print(f"fleetd_rss: {units} units placed on {machines} machines in {fill_s:.0f}s", flush=True)
                standby, watchers = await _child(etcd.endpoint, "standby", limit)
                anchor, anchor_watchers = await _child(etcd.endpoint, "anchor", limit)
                await filled.stop_engine()
                leader, _ = await _child(etcd.endpoint, "leader", limit)
        finally:
            await kv.close()
    print(
        f"fleetd_rss: standby {standby}, {watchers:.0f} watchers; anchor {anchor}; leader {leader}",
        flush=True,
    )
    size = f"{units:,} units on {machines:,} machines"
    baseline = imports_only_mb(standby["modules"])
    return [
        Figure(
            "fleetd_rss",
            f"standby fleetd RSS (agent + engine candidate), {size}",
            f"<= {STANDBY_TARGET_MB:.0f} MB",
            f"{standby['rss_mb']:.1f} MB",
            standby["rss_mb"] <= STANDBY_TARGET_MB,
            f"of it anonymous memory {standby['anon_mb']:.1f} MB, the rest mapped files (libpython, gRPC,"
            f" libcrypto); anchor, standby mirror on: {anchor['rss_mb']:.1f} MB; one process, VmRSS"
            f" {SETTLE:.0f} s after settling",
        ),
        Figure(
            "fleetd_rss",
            "the standby's imports alone: a new interpreter importing the modules the standby had loaded",
            "",
            f"{baseline:.1f} MB",
            None,
            f"the standby's own state: {standby['rss_mb'] - baseline:.1f} MB",
        ),
        Figure(
            "fleetd_rss",
            f"leader fleetd RSS, {size}",
            f"<= {LEADER_TARGET_MB:.0f} MB",
            f"{leader['rss_mb']:.1f} MB",
            leader["rss_mb"] <= LEADER_TARGET_MB and bool(leader["leader"]),
            f"peak {leader['hwm_mb']:.1f} MB; listed and planned in {leader['settled_s']:.1f} s",
        ),
        Figure(
            "fleetd_rss",
            "watchers held by one standby fleetd (etcd_debugging_mvcc_watcher_total while it runs)",
            "<= 3",
            f"{watchers:.0f}",
            watchers <= 3,
            f"anchor, standby mirror on: {anchor_watchers:.0f}",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    machines, units = (100, 2_000) if quick else (5_000, 100_000)
    return asyncio.run(_run(machines, units, 300.0))


if __name__ == "__main__":
    for f in run("--quick" in sys.argv):
        print(f.line())
