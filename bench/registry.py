"""Registry and engine benchmark on a real etcd (loopback): ``python -m bench.registry``.

Simulated machines are in-process lease holders sharing one client. Prints:
1. 10,000 units submitted (target launched) on 1,000 machines: seconds until all are persisted as scheduled;
2. watchers woken by scheduling one more non-global unit (each agent watches schedule/<id>/ and globals/);
3. etcd revision growth of the idle cluster over ``--idle`` seconds with every lease kept alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence

from devcluster.etcd import EtcdServer
from fleetd.engine.engine import Engine
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.kv import KV, WatchEvent
from fleetd.registry.mirror import Mirror
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.unitfile.unit import UnitFile

PREFIX = "/_coreos.com/fleet/"
AGENT_TTL = 30.0


def _unit(name: str) -> tuple[UnitRecord, str]:
    uf = UnitFile.from_text(f"[Unit]\nDescription={name}\n\n[Service]\nExecStart=/bin/sleep infinity\n")
    return UnitRecord(UnitName(name), uf.hash, False, TargetState.LAUNCHED), uf.canonical


async def _keep_alive(kv: KV, leases: Sequence[int], period: float) -> None:
    while True:
        for lease in leases:
            await kv.keep_alive(lease)
        await asyncio.sleep(period)


async def _count(kv: KV, prefix: str, start: int, woken: dict[str, int]) -> None:
    batch: Sequence[WatchEvent]
    async for batch in kv.watch(prefix, start):
        woken[prefix] = woken.get(prefix, 0) + len(batch)


async def bench(machines: int, units: int, idle: float) -> None:
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 << 30)))
    server.start()
    kv = EtcdKV([server.endpoint], request_timeout=30.0)
    tasks: list[asyncio.Task[None]] = []
    try:
        reg = Registry(kv, PREFIX)
        await reg.ensure_schema()
        started = time.perf_counter()
        leases = [await kv.grant(AGENT_TTL) for _ in range(machines)]
        ids = [f"{i:032x}" for i in range(machines)]
        for machine_id, lease in zip(ids, leases, strict=True):
            await reg.register_machine(MachineState(MachineID(machine_id)), lease)
        print(f"registered {machines} machines in {time.perf_counter() - started:.2f}s")
        tasks.append(asyncio.create_task(_keep_alive(kv, leases, AGENT_TTL / 3)))

        engine = Engine(kv, "engine-0", prefix=PREFIX, interval=2.0, ttl=10.0)
        tasks.append(asyncio.create_task(engine.run()))
        scheduled = Mirror(kv, [reg.keys.schedules])
        tasks.append(asyncio.create_task(scheduled.run()))
        await scheduled.ready.wait()
        async with asyncio.timeout(30):
            while not engine.is_leader:  # noqa: ASYNC110 - a flag, polled with a deadline
                await asyncio.sleep(0.01)

        # 1. Throughput.
        batch = [_unit(f"bench-{i:05}.service") for i in range(units)]
        started = time.perf_counter()
        await reg.put_units(batch)
        submitted = time.perf_counter() - started
        async with asyncio.timeout(120):
            while len(scheduled.items(reg.keys.schedules)) < units:
                scheduled.changed.clear()
                await scheduled.changed.wait()
        elapsed = time.perf_counter() - started
        print(
            f"throughput: {units} units on {machines} machines scheduled in {elapsed:.2f}s"
            f" (submit {submitted:.2f}s; {units / elapsed:.0f} placements/s; engine passes {engine.passes})"
        )

        # 2. Fan-out: one watch per agent prefix; schedule one unit; count the watches that saw events.
        revision = (await kv.range(reg.keys.schema)).revision
        woken: dict[str, int] = {}
        prefixes = [reg.keys.schedule(m) for m in ids] + [reg.keys.globals]
        for prefix in prefixes:
            tasks.append(asyncio.create_task(_count(kv, prefix, revision + 1, woken)))
        await asyncio.sleep(1.0)  # let the watches establish
        one = _unit("fanout.service")
        await reg.put_units([one])
        async with asyncio.timeout(30):
            while not any(k.startswith(reg.keys.schedules) for k in woken):  # noqa: ASYNC110 - counters
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # anything else would have arrived by now
        agents = len([p for p in woken if p != reg.keys.globals])
        engine_watches = len(engine.mirror.prefixes) if engine.mirror is not None else 0
        print(
            f"fan-out: scheduling one non-global unit woke {agents} agent watcher(s) of {len(prefixes)}"
            f" (+ the engine: 1 watcher over {engine_watches} prefixes) -> {agents + 1} watchers"
        )

        # 3. Idle revision growth.
        before = (await kv.range(reg.keys.schema)).revision
        await asyncio.sleep(idle)
        after = (await kv.range(reg.keys.schema)).revision
        print(f"idle: revision grew by {after - before} over {idle:.0f}s with {machines} leases kept alive")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await kv.close()
        server.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle cluster to measure")
    args = parser.parse_args(argv)
    asyncio.run(bench(args.machines, args.units, args.idle))


if __name__ == "__main__":
    main()
