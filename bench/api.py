"""The HTTP API's figures: listing 10,000 units through the unix socket, and what serving the API costs an
idle fleetd.

Method: one etcd (devcluster's EtcdServer), filled with 10,000 units written as fleetctl writes them.
- list: the API served in this process (``ApiServer`` on a socket in a temporary directory, fleet's default
  page of 100), read with aiohttp through the socket: the time of ``GET /fleet/v1/units`` (one page: the
  whole list is read when etcd's revision moved, else kept, ``fleetd.api.listing``) over ``--samples``
  requests (p50, p90) after a write that moves etcd's revision (the list is read) and as many with nothing
  changed (the list kept), and of one walk of every page.
- idle: a child process that is fleetd itself (``bench.fleetd_proc``, a fake systemd), once with the API off
  and once on; settled when its agent is registered and its engine leads (nothing to place), then its RSS
  and the CPU seconds it used over an idle window of ``IDLE_WINDOW`` seconds.

    .venv/bin/python -m bench.api [--samples N] [--write]

Not part of the full bench (``python -m bench``): run it alone; ``--write`` puts its figures in their own
generated section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.report import write_section
from devcluster.etcd import EtcdServer
from fleetd.api.listen import ApiServer
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile
from fleetd.units import new_record

if TYPE_CHECKING:
    from fleetd.engine.engine import Engine
    from fleetd.server import Components
    from fleetd.systemd.fake import FakeUnitManager

UNITS = 10_000
IDLE_WINDOW = 10.0
ROOT = Path(__file__).resolve().parent.parent


def child(api_socket: str) -> int:
    """fleetd with a fake systemd; prints its RSS and idle CPU seconds as one JSON line once settled."""
    from bench.fleetd_proc import run_fleetd, status_mb  # noqa: PLC0415

    async def report(components: Components, _manager: FakeUnitManager, engine: Engine) -> None:
        while not (components.agent.registered and engine.is_leader and engine.passes >= 1):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        start = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(IDLE_WINDOW)
        end = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime)
        print(json.dumps({"rss_mb": status_mb("VmRSS"), "idle_cpu_s": cpu}), flush=True)

    return run_fleetd("a91da91d" * 4, report, api_socket=api_socket)


async def _idle(endpoint: str, api_socket: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.api", "--child", api_socket or "-",
        env={**os.environ, "BENCH_ETCD": endpoint}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            while not (line := await proc.stdout.readline()).startswith(b"{"):
                if not line:
                    raise RuntimeError("fleetd child exited")
        got: dict[str, Any] = json.loads(line)
        return got
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def _list(endpoint: str, samples: int, prefix: str) -> dict[str, Any]:
    kv = EtcdKV([endpoint], request_timeout=60.0)
    registry = Registry(kv, prefix)
    texts = [UnitFile.from_text(f"[Service]\nExecStart=/bin/sleep {i}\n") for i in range(UNITS)]
    await registry.ensure_schema()
    await registry.put_units([new_record(f"bench-{i:05}.service", t) for i, t in enumerate(texts)])
    with tempfile.TemporaryDirectory(prefix="fleet-api-bench-") as tmp:
        path = str(Path(tmp) / "fleet.sock")
        server = asyncio.create_task(ApiServer(registry, socket_path=path, listen="", token_limit=100).run())
        try:
            while not await asyncio.to_thread(os.path.exists, path):  # noqa: ASYNC110 - the server makes it
                await asyncio.sleep(0.01)
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as http:
                times, changed = [], []
                for index in range(2 * samples):
                    if index % 2 == 0:
                        await kv.put(f"{prefix}touch", str(index))  # the revision moves: the list is read
                    began = time.perf_counter()
                    async with http.get("http://fleet/fleet/v1/units") as response:
                        assert response.status == 200 and len((await response.json())["units"]) == 100
                    (changed if index % 2 == 0 else times).append(time.perf_counter() - began)
                began, pages, token = time.perf_counter(), 0, ""
                while True:
                    query = f"?nextPageToken={token}" if token else ""
                    async with http.get(f"http://fleet/fleet/v1/units{query}") as response:
                        page = await response.json()
                    pages += 1
                    token = page.get("nextPageToken", "")
                    if not token:
                        break
                walk = time.perf_counter() - began
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            await kv.delete(prefix, prefix=True)
            await kv.close()
    quantiles = statistics.quantiles(times, n=10)
    return {"units": UNITS, "samples": samples, "page_p50_s": statistics.median(times),
            "page_p90_s": quantiles[8], "changed_p50_s": statistics.median(changed),
            "changed_p90_s": statistics.quantiles(changed, n=10)[8], "walk_s": walk, "pages": pages}


async def _run(samples: int) -> dict[str, Any]:
    with EtcdServer() as etcd:
        listed = await _list(etcd.endpoint, samples, "/bench-api/")
        with tempfile.TemporaryDirectory(prefix="fleet-api-idle-") as tmp:
            off = await _idle(etcd.endpoint, "")
            on = await _idle(etcd.endpoint, str(Path(tmp) / "fleet.sock"))
    return {"list": listed, "idle_api_off": off, "idle_api_on": on, "idle_window_s": IDLE_WINDOW}


BEGIN = "<!-- api: generated by `python -m bench.api --write`; edit the benchmark -->"
END = "<!-- end of api -->"


def section(figures: dict[str, Any]) -> str:
    """The generated section of docs/performance.md for one run's ``figures``."""
    listed, off, on = figures["list"], figures["idle_api_off"], figures["idle_api_on"]
    load = os.getloadavg()
    return "\n".join([
        BEGIN,
        "## The HTTP API",
        "",
        f"One run of `python -m bench.api` (not part of the full run): {listed['units']:,} units in one"
        " etcd, the API on a unix socket in this process, fleet's page of 100; an idle fleetd process (fake"
        " systemd, leading, nothing to place) with the API off and on. Load average at the end:"
        f" {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (2 cores).",
        "",
        "| figure | measured | sample |",
        "|---|---|---|",
        f"| `GET /fleet/v1/units` (one page of 100), {listed['units']:,} units, after a change in etcd (the"
        f" list read) | p50 {listed['changed_p50_s'] * 1000:.0f} ms, p90 {listed['changed_p90_s'] * 1000:.0f}"
        f" ms | {listed['samples']} requests |",
        f"| the same with nothing changed since the last request (the list kept) | p50"
        f" {listed['page_p50_s'] * 1000:.0f} ms, p90 {listed['page_p90_s'] * 1000:.0f} ms |"
        f" {listed['samples']} requests |",
        f"| every page of those units ({listed['pages']} pages) | {listed['walk_s']:.1f} s | 1 walk |",
        f"| idle fleetd RSS, API off / on | {off['rss_mb']:.1f} / {on['rss_mb']:.1f} MB | 1 process each |",
        f"| idle fleetd CPU over {figures['idle_window_s']:.0f} s, API off / on | {off['idle_cpu_s']:.3f} /"
        f" {on['idle_cpu_s']:.3f} s | 1 window each |",
        END,
    ])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="write the figures into docs/performance.md")
    parser.add_argument("--child")
    args = parser.parse_args(argv)
    if args.child is not None:
        return child("" if args.child == "-" else args.child)
    figures = asyncio.run(_run(args.samples))
    print(json.dumps(figures, indent=2))
    if args.write:
        write_section(BEGIN, END, section(figures))
        print("written to docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
