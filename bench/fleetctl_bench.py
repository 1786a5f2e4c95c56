"""fleetctl on a large cluster: ``list-units`` latency and the request count of ``cat``/``stop``.

Targets: ``list-units`` with 10,000 units on 1,000 machines p50 <= 200 ms, p99 <= 500 ms in a warm process
(issue 6), and p50 <= 250 ms as a cold CLI process (issue 15: a new Python process per command, imports
and connection included, as a user runs it); ``stop`` and ``cat`` of one unit make a constant number of etcd
requests whatever the cluster size. The machines are simulated fleetds (bench.cluster_sim: agent + engine
candidate) that really started the units and published their states. Warm commands run the fleetctl CLI in
one worker process (click's runner, its own event loop and etcd connection per command); a counting wrapper
around the KV counts every etcd request. Cold commands run ``fleetctl.cli.main`` in a new interpreter each,
with the project's bytecode compiled as an installed package has it (``bench.installed``).

    .venv/bin/python -m bench fleetctl [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bench.cluster_sim import SimCluster, unit, wait_until
from bench.installed import installed_env
from bench.report import Figure
from devcluster.etcd import EtcdServer
from fleetctl.cli import cli
from fleetctl.client import FleetClient
from fleetctl.context import App, GlobalOptions
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.kv import Compare, KeyValue, Op, RangeResult, TxnResult, WatchEvent
from fleetd.registry.registry import Registry

__all__ = ["CountingKV", "cold_list_units", "percentile", "run"]

P50_MS, P99_MS = 200.0, 500.0
COLD_P50_MS = 250.0
ROOT = Path(__file__).resolve().parents[1]


class CountingKV:
    """The KV port with every etcd request counted (a watch counts once, when created)."""

    def __init__(self, inner: EtcdKV) -> None:
        self.inner = inner
        self.requests = 0

    async def get(self, key: str) -> KeyValue | None:
        self.requests += 1
        return await self.inner.get(key)

    async def range(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> RangeResult:
        self.requests += 1
        return await self.inner.range(prefix, revision=revision, limit=limit, start=start)

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        self.requests += 1
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self.requests += 1
        return await self.inner.delete(key, prefix=prefix)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.requests += 1
        return await self.inner.txn(compares, success, failure)

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        self.requests += 1
        return self.inner.watch(prefix, start_revision, prev_kv=prev_kv)

    async def grant(self, ttl: float) -> int:
        self.requests += 1
        return await self.inner.grant(ttl)

    async def keep_alive(self, lease_id: int) -> float:
        self.requests += 1
        return await self.inner.keep_alive(lease_id)

    async def revoke(self, lease_id: int) -> None:
        self.requests += 1
        await self.inner.revoke(lease_id)

    async def time_to_live(self, lease_id: int) -> float:
        self.requests += 1
        return await self.inner.time_to_live(lease_id)

    async def close(self) -> None:
        await self.inner.close()


class _Counted:
    """A fleetctl connector whose clients count their requests into ``last``."""

    def __init__(self) -> None:
        self.last = 0

    @asynccontextmanager
    async def connect(self, options: GlobalOptions) -> AsyncIterator[FleetClient]:
        kv = CountingKV(EtcdKV(list(options.endpoints), request_timeout=options.request_timeout))
        try:
            yield FleetClient(Registry(kv, options.etcd_key_prefix))
        finally:
            self.last = kv.requests
            await kv.close()


def _fleetctl(endpoint: str, counter: _Counted, *args: str) -> tuple[float, str]:
    """Run one fleetctl command in-process; (seconds, output). Raises on a non-zero exit."""
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli, ["--endpoint", endpoint, "--request-timeout", "10", *args], obj=App(connect=counter.connect)
    )
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(f"fleetctl {' '.join(args)} failed ({result.exit_code}): {result.output[-500:]}")
    return elapsed, result.output


def worker(endpoint: str, commands: list[list[str]]) -> None:
    """A fleetctl-like process: run each command in turn, print one JSON line per command."""
    counter = _Counted()
    for args in commands:
        elapsed, output = _fleetctl(endpoint, counter, *args)
        print(
            json.dumps(
                {
                    "args": args,
                    "ms": elapsed * 1000,
                    "requests": counter.last,
                    "rows": len(output.splitlines()),
                }
            ),
            flush=True,
        )
        if args[-1] == "--no-block":
            time.sleep(1.0)  # let the agent act before the next command


async def _commands(endpoint: str, commands: list[list[str]]) -> list[dict[str, Any]]:
    """Run ``worker`` in a child process (its own event loop and gRPC state) and collect its lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleetctl_bench",
        "--worker",
        endpoint,
        json.dumps(commands),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"fleetctl worker failed ({proc.returncode}): {err.decode()[-2000:]}")
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def _requests(endpoint: str, name: str) -> dict[str, int]:
    """etcd requests made by ``cat``, ``stop --no-block`` and ``start --no-block`` of one unit, then by a
    blocking ``stop`` and ``start`` (their wait opens a watch only when the first read shows the unit short
    of the state, so those two vary by one with timing, not with size)."""
    steps = [["cat"], ["stop", "--no-block"], ["start", "--no-block"], ["stop"], ["start"]]
    results = await _commands(endpoint, [[*step, name] for step in steps])
    return {" ".join(r["args"][:-1]): int(r["requests"]) for r in results}


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of ``ordered`` (sorted, not empty), nearest rank."""
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def cold_list_units(endpoint: str, runs: int, budget: float) -> list[float]:
    """Milliseconds of ``fleetctl list-units``, a new process each time: ``runs`` runs, or ``budget`` s."""
    code = "import sys; from fleetctl.cli import main; sys.exit(main())"
    args = ["--endpoint", endpoint, "--request-timeout", "10", "list-units", "--no-legend"]
    times: list[float] = []
    env = installed_env()
    deadline = time.monotonic() + budget
    while len(times) < runs and time.monotonic() < deadline:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"fleetctl list-units failed ({proc.returncode}): {err.decode()[-500:]}")
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _states(cluster: SimCluster, count: int, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while len((await cluster.kvs[0].range(cluster.registry.keys.states)).kvs) < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def _run(machines: int, units: int, calls: int, *, cold_runs: int, cold_budget: float) -> list[Figure]:
    with EtcdServer(extra_args=("--quota-backend-bytes", str(4 << 30))) as etcd:
        async with SimCluster(etcd.endpoint, ttl=30.0, clients=8) as cluster:
            await cluster.add_machines(machines)
            small = [unit(f"probe-{i}.service") for i in range(10)]
            await cluster.registry.put_units(small)
            await wait_until(lambda: cluster.starts >= len(small), cluster.changed, 60)
            await _states(cluster, len(small), 60)
            before = await _requests(etcd.endpoint, "probe-0.service")
            started = time.monotonic()
            await cluster.registry.put_units([unit(f"app-{i:05}.service") for i in range(units)])
            done = await wait_until(lambda: cluster.starts >= len(small) + units, cluster.changed, 300)
            published = await _states(cluster, len(small) + units, 300)
            print(
                f"fleetctl: {units} units active on {machines} machines and published in"
                f" {time.monotonic() - started:.1f}s ({done and published})",
                flush=True,
            )
            after = await _requests(etcd.endpoint, "probe-1.service")
            results = await _commands(etcd.endpoint, [["list-units", "--no-legend"]] * calls)
            cold = await cold_list_units(etcd.endpoint, cold_runs, cold_budget)
    latencies = [float(r["ms"]) for r in results]
    rows = int(results[-1]["rows"])
    requests = int(results[-1]["requests"])
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"fleetctl: list-units ({rows} rows) p50 {p50:.0f} ms p99 {p99:.0f} ms; requests {before} -> {after}",
        flush=True,
    )
    cold_p50 = statistics.median(cold)
    cold.sort()
    print(f"fleetctl: cold list-units p50 {cold_p50:.0f} ms over {len(cold)} processes", flush=True)
    fixed = ("cat", "stop --no-block", "start --no-block")
    constant = all(before[c] == after[c] for c in fixed)
    return [
        Figure(
            "fleetctl",
            f"list-units p50, {len(small) + units:,} units on {machines:,} machines",
            f"<= {P50_MS:.0f} ms",
            f"{p50:.0f} ms",
            p50 <= P50_MS and rows >= units,
            f"{rows:,} rows, {requests} etcd requests, {calls} runs",
        ),
        Figure("fleetctl", "list-units p99", f"<= {P99_MS:.0f} ms", f"{p99:.0f} ms", p99 <= P99_MS),
        Figure(
            "fleetctl",
            f"list-units as a cold CLI process (new interpreter each run), {len(small) + units:,} units",
            f"p50 <= {COLD_P50_MS:.0f} ms",
            f"p50 {cold_p50:.0f} ms",
            cold_p50 <= COLD_P50_MS,
            f"p99 {percentile(cold, 0.99):.0f} ms, {len(cold)} runs",
        ),
        Figure(
            "fleetctl",
            f"etcd requests of {' / '.join(fixed)} of one unit, {len(small)} vs {len(small) + units:,} units",
            "constant",
            " / ".join(f"{before[c]} vs {after[c]}" for c in fixed),
            constant,
        ),
        Figure(
            "fleetctl",
            "the same for blocking stop / start (until the agent reports the state)",
            "",
            " / ".join(f"{before[c]} vs {after[c]}" for c in ("stop", "start")),
            None,
            "+1 watch when the first read shows the unit short of the state",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    if quick:
        return asyncio.run(_run(100, 1_000, 5, cold_runs=5, cold_budget=30.0))
    return asyncio.run(_run(1_000, 10_000, 40, cold_runs=100, cold_budget=120.0))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
        sys.exit(0)
    for f in run("--quick" in sys.argv):
        print(f.line())
