"""Smoke test of the benchmark entry point: the planner benchmark at --quick sizes, the report, and the
simulator's worker processes (on a real etcd, 10 machines; skipped without the etcd binary).

Nothing here asserts a wall-clock time; it checks that the figures come out and the report is written.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from bench import __main__ as entry
from bench.cluster_sim import machine_id, unit, wait_until
from bench.report import BEGIN, END, Figure, render, write_report
from bench.sim_worker import ProcCluster
from devcluster.etcd import EtcdServer
from fleetd.model import MachineID


def test_quick_planner_figures_have_targets() -> None:
    figures = entry.planner(True)
    assert [f.bench for f in figures] == ["planner"] * 4
    assert all(f.target and f.measured and f.passed is not None for f in figures[:3])


def test_report_replaces_its_own_section_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Registry and engine\n\nhand-written\n")
    figure = Figure("x", "a figure", "<= 1 s", "2 s", False, "why")
    write_report(render([figure], command="python -m bench", seconds=60), doc)
    write_report(render([figure], command="python -m bench", seconds=90), doc)
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| x | a figure | <= 1 s | 2 s (why) | **FAIL** |" in text
    assert "1.5 min" in text and "1.0 min" not in text
    assert text.startswith("# Performance\n") and text.rstrip().endswith("hand-written")


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit) as stopped:
        entry.main(["no-such-bench"])
    assert stopped.value.code == 2


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
def test_worker_processes_report_activations_and_exit_with_the_coordinator() -> None:
    async def scenario() -> tuple[dict[MachineID, float], float, float, list[int]]:
        with EtcdServer() as etcd:
            async with ProcCluster(
                etcd.endpoint, workers=2, ttl=10.0, clients=1, leader_apart=True
            ) as cluster:
                await cluster.add_machines(10)
                pids = cluster.pids
                # the first machine, alone in the first worker, leads
                leader = await cluster.kvs[0].get(cluster.registry.keys.leader)
                assert leader is not None and leader.value == machine_id(f"{cluster.prefix}m-0")
                record = unit("smoke.service", is_global=True)
                submitted = time.monotonic()
                await cluster.registry.put_units([record])
                await wait_until(
                    lambda: len(cluster.active.get(record[0].name, {})) >= 10, cluster.changed, 30
                )
                seen = dict(cluster.active.get(record[0].name, {}))
                # The coordinator's end of a pipe closing (as when it dies) ends that worker.
                cluster._conns[0].close()
                cluster._procs[0].join(10)
                assert cluster._procs[0].exitcode is not None
                return seen, submitted, time.monotonic(), pids

    seen, submitted, finished, pids = asyncio.run(scenario())
    assert len(seen) == 10 and all(submitted <= at <= finished for at in seen.values())
    assert len(pids) == 3  # the leader's worker and two others
    for pid in pids:  # close() stopped every worker
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
def test_every_simulated_machine_is_an_engine_candidate_and_clocks_stop_at_list_units() -> None:
    from bench import herd  # noqa: PLC0415

    async def scenario() -> herd.Herd:
        with EtcdServer() as etcd:
            return await herd.measure(etcd, 3, 1)

    got = asyncio.run(scenario())
    assert got.machines == 3 and got.events_per_start > 0
    assert got.watchers_per_standby == pytest.approx(3.0)  # agent: 2 watches, candidate: the leader key
