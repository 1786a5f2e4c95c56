"""Simulated machines spread over worker processes, for benchmarks one Python process cannot drive.

Each worker is a spawned process with its own asyncio loop, its own EtcdKV clients and a ``SimCluster``
running a disjoint range of machines, each an agent and an engine candidate as fleetd runs by default (the
leader is whichever candidate wins; with ``leader_apart``, the one machine of a worker started first, so the
leader's engine does not share a process, and its interpreter lock, with thousands of simulated agents).
It reports every first start of a unit on one of its machines (unit, machine, ``time.monotonic()``:
CLOCK_MONOTONIC, shared by every process on Linux) to the coordinator through a pipe, in batches every
20 ms. The coordinator (``ProcCluster``) runs no engine; it offers what the fan-out and footprint benchmarks
read: ``registry``, ``kvs``, ``active``, ``starts``, ``changed``.

    async with ProcCluster(etcd.endpoint, workers=2, ttl=30.0, clients=8, leader_apart=True) as cluster:
        await cluster.add_machines(5000)

Workers exit when asked, when the coordinator's end of the pipe closes (the coordinator exited or died), and
``close()`` kills any still running after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.cluster_sim import PREFIX, SimCluster
from fleetd.model import MachineID, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry

__all__ = ["ProcCluster", "cpu_seconds"]

FLUSH = 0.02  # seconds between batches of activations sent to the coordinator
PASSES_EVERY = 1.0  # seconds between reports of the engine passes run as leader in a worker
# Objects that survive a run land in the oldest GC generation and make full collections (each 0.2-0.3 s with
# 2,500 agents, finding no garbage) run dozens of times per run; freezing the survivors now and then keeps
# full collections small. A simulator-only measure: cyclic garbage frozen meanwhile is never collected.
FREEZE_EVERY = 5.0
Started = tuple[str, str, float]  # (unit, machine, monotonic time)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    endpoint: str
    prefix: str
    ttl: float
    clients: int
    first: int  # machines first .. first + count - 1
    count: int


def _worker(conn: Connection, spec: WorkerSpec) -> None:
    """Process entry point: simulate the spec's machines until told to stop or the coordinator is gone."""
    try:
        asyncio.run(_serve(conn, spec))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


async def _serve(conn: Connection, spec: WorkerSpec) -> None:
    # The agents' errors (the only records the simulator lets through) carry the time and the worker.
    logging.basicConfig(format=f"%(asctime)s worker {spec.first}+{spec.count}: %(message)s")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started: list[Started] = []

    def readable() -> None:  # "stop", or EOF: the coordinator is gone
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        loop.remove_reader(conn.fileno())
        stop.set()

    loop.add_reader(conn.fileno(), readable)
    sim = SimCluster(spec.endpoint, ttl=spec.ttl, clients=spec.clients, prefix=spec.prefix)
    async with sim as cluster:
        cluster.listener = lambda name, machine, at: started.append((name, machine, at))
        await cluster.add_machines(spec.count, first=spec.first)
        conn.send(("up", spec.count))
        frozen = counted = time.monotonic()
        passes = (0, 0.0)
        while not stop.is_set():
            if time.monotonic() - frozen > FREEZE_EVERY:
                gc.freeze()
                frozen = time.monotonic()
            if started:
                batch, started[:] = list(started), []
                conn.send(("started", batch))
            if time.monotonic() - counted > PASSES_EVERY:  # the leader's passes, if it runs here
                counted = time.monotonic()
                leading = [e for e in cluster.engines if e.pass_seconds]
                now = (sum(len(e.pass_seconds) for e in leading), sum(sum(e.pass_seconds) for e in leading))
                if now != passes:
                    passes = now
                    conn.send(("passes", passes))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH)


class ProcCluster:
    """Simulated fleetds (agent + engine candidate) in ``workers`` spawned processes; each worker has
    ``clients`` EtcdKV clients for its agents and as many for its candidates."""

    def __init__(
        self,
        endpoint: str,
        *,
        workers: int = 2,
        ttl: float = 10.0,
        clients: int = 8,
        prefix: str = PREFIX,
        request_timeout: float = 30.0,
        leader_apart: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._leader_apart = leader_apart
        self.prefix = prefix
        self.ttl = ttl
        self._workers = workers
        self._clients = clients
        self._local = SimCluster(
            endpoint, ttl=ttl, clients=1, engines=0, prefix=prefix, request_timeout=request_timeout
        )
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        self._up = 0
        self._failure: str | None = None
        self.active: dict[UnitName, dict[MachineID, float]] = {}
        self.starts = 0  # (unit, machine) pairs that became active, in total
        self._passes: dict[int, tuple[int, float]] = {}  # worker pipe fd -> (leader passes, seconds in them)
        self.changed = asyncio.Event()

    @property
    def kvs(self) -> list[EtcdKV]:
        return self._local.kvs

    @property
    def registry(self) -> Registry:
        return self._local.registry

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def leader_passes(self) -> tuple[int, float]:
        """Engine passes completed as leader so far, in every worker, and the seconds they took."""
        return sum(n for n, _ in self._passes.values()), sum(t for _, t in self._passes.values())

    def cpu_seconds(self) -> float:
        """CPU seconds of the coordinator and every worker so far."""
        return time.process_time() + sum(cpu_seconds(pid) for pid in self.pids)

    def leader_cpu_seconds(self) -> float:
        """CPU seconds of the leading machine's own worker so far (``leader_apart``), else 0."""
        if not self._leader_apart or not self.pids:
            return 0.0
        return cpu_seconds(self.pids[0])

    async def __aenter__(self) -> ProcCluster:
        await self._local.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _receive(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            message: tuple[str, Any] = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            self._failure = self._failure or "a simulator worker exited"
            self.changed.set()
            return
        kind, body = message
        if kind == "up":
            self._up += 1
        elif kind == "started":
            for name, machine, at in body:
                seen = self.active.setdefault(UnitName(name), {})
                if MachineID(machine) not in seen:
                    seen[MachineID(machine)] = at
                    self.starts += 1
        elif kind == "passes":
            self._passes[conn.fileno()] = body
        else:
            self._failure = f"simulator worker failed:\n{body}"
        self.changed.set()

    async def add_machines(self, count: int, limit: float = 300.0) -> None:
        """Start the workers with ``count`` machines between them; return once every machine is up.

        With ``leader_apart`` the first machine runs alone in a worker of its own, started first, so its
        engine candidate wins the election and leads from a process of its own, as a real leader does (its
        fleetd is one agent and one engine); the other machines are shared by ``workers`` workers.
        """
        if self._procs:
            raise RuntimeError("ProcCluster.add_machines can be called once")
        deadline = time.monotonic() + limit
        first = 0
        if self._leader_apart and count > 1:
            self._spawn(first, 1)
            await self._until_up(deadline)
            first, count = 1, count - 1
        share, extra = divmod(count, self._workers)
        for index in range(self._workers):
            size = share + (index < extra)
            self._spawn(first, size)
            first += size
        await self._until_up(deadline)

    def _spawn(self, first: int, size: int) -> None:
        """Start a worker simulating machines ``first`` .. ``first + size - 1``."""
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        proc = context.Process(
            target=_worker,
            args=(
                theirs,
                WorkerSpec(self.endpoint, self.prefix, self.ttl, min(self._clients, size), first, size),
            ),
            name=f"sim-worker-{len(self._procs)}",
            daemon=True,
        )
        proc.start()
        theirs.close()
        self._procs.append(proc)
        self._conns.append(mine)
        asyncio.get_running_loop().add_reader(mine.fileno(), partial(self._receive, mine))

    async def _until_up(self, deadline: float) -> None:
        while self._up < len(self._procs):
            if self._failure:
                raise RuntimeError(self._failure)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self._procs) - self._up} simulator workers not up in time")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)

    def check(self) -> None:
        """Raise when a worker failed or exited."""
        if self._failure:
            raise RuntimeError(self._failure)

    async def close(self, grace: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError, ValueError):
                conn.send("stop")
        deadline = time.monotonic() + grace
        for proc in self._procs:
            await asyncio.to_thread(proc.join, max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()
        await self._local.close()
