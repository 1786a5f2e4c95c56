"""Dashboard figures: ``python -m bench.dashboard [--units 10000]`` prints the time to first render of the
page in headless Chromium and the bytes sent per live update.

The dashboard server runs on the in-memory registry filled with ``--units`` launched units spread over
``--machines`` machines (each with its schedule entry and an active state), as ``fleetctl dashboard`` serves
it. Chromium loads the page; the first render is the page's own mark (``performance.now()`` when the snapshot
is drawn, from the start of navigation). Then ``--updates`` unit state changes are written one at a time and
the server counts the bytes of every ``diff`` event it sends (one change each), after the browser has shown
the last one. Bytes on the wire are measured by a second stream opened beside the browser's, as a browser
asks for it (``Accept-Encoding: gzip``; the server then sends one gzip stream flushed after every event): the
body bytes up to the end of the snapshot event, and those the updates add. Not part of ``python -m bench``:
it needs Chromium (scripts/setup installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import socket
import threading
import time
import zlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from devcluster.browser import available, headless_chromium
from fleetd.api.dashboard import Journal, make_dashboard_app
from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile
from fleetd.units import new_record

T = TypeVar("T")
BODY = UnitFile.from_text("[Service]\nExecStart=/bin/sleep infinity\n")
DEADLINE = 120.0


async def _no_journal(name: str, lines: int) -> Journal:
    return Journal(message="no journals in the benchmark")


class Server:
    """The dashboard on a filled MemoryKV, served from an event loop in a thread."""

    def __init__(self, units: int, machines: int) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.kv = MemoryKV()
        self.registry = Registry(self.kv)
        self.feed = DashboardFeed(self.registry)
        self.machines = [MachineID(hashlib.md5(f"m{i}".encode()).hexdigest()) for i in range(machines)]
        self.names = [UnitName(f"app@{i}.service") for i in range(units)]
        self.lease = 0
        self.port = 0
        self.call(self._start())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(DEADLINE)

    async def _start(self) -> None:
        from aiohttp import web  # noqa: PLC0415

        self.lease = await self.kv.grant(3600)
        for i, machine_id in enumerate(self.machines):
            state = MachineState(machine_id, f"127.0.1.{i % 250 + 1}", {"role": "web" if i % 2 else "db"})
            await self.registry.register_machine(state, self.lease)
        await self.registry.put_units([new_record(n, BODY, TargetState.LAUNCHED) for n in self.names])
        keys = self.registry.keys
        for i, name in enumerate(self.names):
            machine_id = self.machines[i % len(self.machines)]
            entry = ks.encode_schedule(BODY.hash, TargetState.LAUNCHED)
            await self.kv.put(keys.scheduled(machine_id, name), entry)
        await self.set_active(self.names, "active")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = make_dashboard_app(self.feed, _no_journal, hosts={f"127.0.0.1:{self.port}"})
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def set_active(self, names: list[UnitName], active: str) -> None:
        """Publish ``active`` for the first ``len(names)`` units, each from its own machine."""
        sub = "running" if active == "active" else "failed"
        states = [
            UnitState(name, self.machines[i % len(self.machines)], "loaded", active, sub, BODY.hash,
                      TargetState.LAUNCHED)
            for i, name in enumerate(names)
        ]
        await self.registry.publish_states(states, self.lease)

    def close(self) -> None:
        self.call(self._runner.cleanup())
        self.call(self.kv.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class WireReader:
    """A gzip event stream read in a thread: body bytes received (``wire``) and the decoded text."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        self._connection.request("GET", "/dashboard/events", headers={"Accept-Encoding": "gzip"})
        self._reply = self._connection.getresponse()
        self.encoding = self._reply.getheader("Content-Encoding", "identity")
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.encoding == "gzip" else None
        self.wire = 0
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._reply.read1(65536):
                text = (self._inflate.decompress(chunk) if self._inflate else chunk).decode()
                with self._lock:
                    self.wire += len(chunk)
                    self.text += text
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed under the read

    def seen(self) -> tuple[int, str]:
        with self._lock:
            return self.wire, self.text

    def snapshot_read(self) -> int | None:
        """The bytes received once the whole snapshot event is (None before)."""
        wire, text = self.seen()
        return wire if "\n\n" in text.partition("event: snapshot")[2] else None

    def close(self) -> None:
        self._connection.close()


def _wait(probe: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def measure(units: int, machines: int, updates: int, screenshot: str = "") -> dict[str, Any]:
    server = Server(units, machines)
    try:
        with headless_chromium() as driver:
            started = time.monotonic()
            driver.get(f"http://127.0.0.1:{server.port}/")
            first = _wait(lambda: driver.execute_script("return window.fleetDashboard.firstRenderMs"),
                          "the first render")
            wall = time.monotonic() - started
            rows = driver.execute_script("return document.querySelectorAll('#units tbody tr').length")
            snapshot_bytes = len(server.feed.snapshot_frame().encode())
            reader = WireReader(server.port)
            snapshot_wire = _wait(reader.snapshot_read, "the snapshot on the wire")
            if screenshot:
                driver.save_screenshot(screenshot)
            before_frames, before_bytes = server.feed.frames_sent, server.feed.bytes_sent
            update_started = time.monotonic()
            for i in range(updates):
                server.call(server.set_active(server.names[:1], "failed" if i % 2 == 0 else "active"))
                _wait(lambda i=i: driver.execute_script("return window.fleetDashboard.diffs") >= i + 1,
                      f"update {i + 1} in the browser")
            update_seconds = time.monotonic() - update_started
            frames = server.feed.frames_sent - before_frames
            sent = server.feed.bytes_sent - before_bytes
            _wait(lambda: reader.seen()[1].count("event: diff") >= frames, "the updates on the wire")
            update_wire = reader.seen()[0] - snapshot_wire
            encoding = reader.encoding
            reader.close()
    finally:
        server.close()
    return {
        "units": units, "machines": machines, "first_render_ms": float(first), "load_wall_s": wall,
        "rows_drawn": float(rows), "snapshot_bytes": float(snapshot_bytes), "updates": float(frames),
        "bytes_per_update": sent / frames if frames else 0.0, "encoding": encoding,
        "snapshot_wire_bytes": float(snapshot_wire),
        "wire_bytes_per_update": update_wire / frames if frames else 0.0,
        "update_round_trip_ms": 1000 * update_seconds / updates if updates else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--screenshot", default="", help="save a PNG of the loaded page here")
    args = parser.parse_args()
    problem = available()
    if problem:
        parser.exit(1, f"error: {problem}\n")
    figures = measure(args.units, args.machines, args.updates, args.screenshot)
    print(
        f"dashboard: {figures['units']:,.0f} units on {figures['machines']:,.0f} machines: first render"
        f" {figures['first_render_ms']:.0f} ms after navigation ({figures['load_wall_s']:.2f} s wall,"
        f" {figures['rows_drawn']:.0f} rows drawn, snapshot {figures['snapshot_bytes'] / 1024:,.0f} KiB);"
        f" {figures['updates']:.0f} updates: {figures['bytes_per_update']:.0f} bytes each,"
        f" {figures['update_round_trip_ms']:.0f} ms from write to browser;"
        f" on the wire ({figures['encoding']}): snapshot {figures['snapshot_wire_bytes'] / 1024:,.0f} KiB,"
        f" {figures['wire_bytes_per_update']:.0f} bytes per update"
    )


if __name__ == "__main__":
    main()
