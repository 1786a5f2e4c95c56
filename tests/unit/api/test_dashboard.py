"""The dashboard's server on MemoryKV through aiohttp's test client: page and assets, the event stream (one
watch for every browser, a snapshot then small diffs), the unit page, the host check, and fleetd's root."""

from __future__ import annotations

import asyncio
import json
import socket
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from fleetctl.commands.dashboard import allowed_hosts, parse_address
from fleetctl.context import UsageFailed
from fleetd.api.app import make_app
from fleetd.api.dashboard import Journal, accepts_gzip, add_dashboard, make_dashboard_app
from fleetd.api.dashboard_feed import DashboardFeed, Subscriber
from fleetd.model import MachineID, MachineState, TargetState, UnitState
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile
from fleetd.units import new_record

M1 = MachineID("a" * 32)
HELLO = UnitFile.from_text("[Service]\nExecStart=/bin/sleep 1000\n")

Scenario = Callable[[TestClient[Any, Any], Registry, MemoryKV, DashboardFeed], Awaitable[None]]


async def fake_journal(name: str, lines: int) -> Journal:
    return Journal(tuple(f"{name} line {i}" for i in range(lines)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(scenario: Scenario) -> None:
    async def main() -> None:
        kv = MemoryKV()
        registry = Registry(kv)
        feed = DashboardFeed(registry, linger=0.05, retry_delay=0.05)
        port = free_port()
        app = make_dashboard_app(feed, fake_journal, hosts=allowed_hosts("127.0.0.1", port))
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        try:
            await scenario(client, registry, kv, feed)
        finally:
            await client.close()
            await kv.close()

    asyncio.run(main())


async def frames(response: ClientResponse) -> Any:
    """Each server-sent event as (event, data) in order; comments skipped."""
    event = ""
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 5)).decode()
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


async def next_frame(stream: Any) -> tuple[str, Any]:
    result: tuple[str, Any] = await stream.__anext__()
    return result


async def start_unit(registry: Registry, name: str = "hello.service") -> None:
    await registry.put_units([new_record(name, HELLO, TargetState.LAUNCHED)])


def test_the_page_and_its_assets_are_served_from_the_package() -> None:
    async def scenario(client: TestClient[Any, Any], *_: Any) -> None:
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert '<script src="/dashboard/static/app.js"' in html and "http" not in html.split("<body>")[0]
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            asset = await client.get(f"/dashboard/static/{name}")
            assert asset.status == 200 and asset.content_type == kind
            assert len(await asset.read()) < 30_000
        assert (await client.get("/dashboard/static/index.html")).status == 404
        assert (await client.get("/dashboard/static/..%2Fdashboard.py")).status == 404

    run(scenario)


def test_the_stream_starts_with_a_snapshot_then_sends_only_what_changed() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry, kv: MemoryKV, feed: Any) -> None:
        lease = await kv.grant(60)
        await registry.register_machine(MachineState(M1, "10.0.0.1", {"role": "web"}), lease)
        await start_unit(registry, "old.service")
        response = await client.get("/dashboard/events")
        assert response.headers["Content-Type"] == "text/event-stream"
        stream = frames(response)
        event, snapshot = await next_frame(stream)
        assert event == "snapshot"
        assert [u["name"] for u in snapshot["units"]] == ["old.service"]
        assert snapshot["machines"] == [{"id": M1, "ip": "10.0.0.1", "metadata": {"role": "web"}, "units": 0}]
        await start_unit(registry)
        event, diff = await next_frame(stream)
        assert event == "diff"
        assert [(c["op"], c["unit"]["name"], c["unit"]["desired"]) for c in diff["changes"]] == [
            ("unit", "hello.service", "launched")
        ]
        state = UnitState(
            "hello.service", M1, "loaded", "active", "running", HELLO.hash, TargetState.LAUNCHED
        )
        await registry.publish_states([state], lease)
        event, diff = await next_frame(stream)
        ops = {c["op"]: c for c in diff["changes"]}
        assert ops["unit"]["unit"]["active"] == "active"
        assert ops["machine"]["machine"]["units"] == 1
        await registry.destroy_units(["hello.service"])
        event, diff = await next_frame(stream)
        assert diff["changes"] == [{"op": "unit-removed", "name": "hello.service"}]
        assert feed.frames_sent == 3 and feed.bytes_sent < 1000
        response.close()

    run(scenario)


def test_every_browser_shares_one_watch_and_an_idle_feed_stops() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry, kv: MemoryKV, feed: Any) -> None:
        responses = [await client.get("/dashboard/events") for _ in range(3)]
        streams = [frames(response) for response in responses]
        for stream in streams:
            assert (await next_frame(stream))[0] == "snapshot"
        assert kv.watchers == 1
        await start_unit(registry)
        for stream in streams:
            event, diff = await next_frame(stream)
            assert (event, diff["changes"][0]["unit"]["name"]) == ("diff", "hello.service")
        for response in responses:
            response.close()
        deadline = asyncio.get_running_loop().time() + 5
        while kv.watchers and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (a count)
            await asyncio.sleep(0.02)
        assert kv.watchers == 0  # nobody looks: the feed let go of its watch

    run(scenario)


def test_a_subscriber_that_falls_behind_is_dropped_not_waited_for() -> None:
    async def scenario() -> None:
        subscriber = Subscriber(backlog=2)
        subscriber.offer("a")
        subscriber.offer("b")
        subscriber.offer("c")  # over the backlog: its stream ends (the browser reconnects from a snapshot)
        assert subscriber.closed
        assert await subscriber.next() is None

    asyncio.run(scenario())


def test_the_unit_page_has_the_unit_file_states_and_journal() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry, kv: MemoryKV, feed: Any) -> None:
        await start_unit(registry)
        page = await client.get("/dashboard/units/hello.service")
        assert page.status == 200
        data = await page.json()
        assert data["unit"]["name"] == "hello.service" and data["body"] == HELLO.canonical
        assert data["states"] == []
        missing = await client.get("/dashboard/units/nope.service")
        assert missing.status == 404
        journal = await (await client.get("/dashboard/units/hello.service/journal?lines=3")).json()
        assert journal == {"lines": [f"hello.service line {i}" for i in range(3)], "message": ""}
        journal = await (await client.get("/dashboard/units/hello.service/journal?lines=x")).json()
        assert len(journal["lines"]) == 50

    run(scenario)


def test_the_local_dashboard_answers_only_to_its_own_address() -> None:
    async def scenario(client: TestClient[Any, Any], *_: Any) -> None:
        port = client.port
        assert (await client.get("/", headers={"Host": f"127.0.0.1:{port}"})).status == 200
        assert (await client.get("/", headers={"Host": f"localhost:{port}"})).status == 200
        for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
            refused = await client.get("/dashboard/events", headers={"Host": host})
            assert refused.status == 421

    run(scenario)


def test_fleetd_serves_the_dashboard_at_root_only_when_given_it() -> None:
    async def main() -> None:
        registry = Registry(MemoryKV())
        plain: TestClient[Any, Any] = TestClient(TestServer(make_app(registry)))
        feed = DashboardFeed(registry)
        with_dashboard: TestClient[Any, Any] = TestClient(
            TestServer(make_app(registry, root=lambda app: add_dashboard(app, feed, fake_journal)))
        )
        for client in (plain, with_dashboard):
            await client.start_server()
        try:
            assert (await plain.get("/")).status == 405
            assert (await with_dashboard.get("/")).status == 200
            assert (await with_dashboard.post("/")).status == 405
            assert (await with_dashboard.get("/fleet/v1/units")).status == 200
        finally:
            for client in (plain, with_dashboard):
                await client.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("localhost:8480", ("localhost", 8480)), ("[::1]:80", ("::1", 80))],
)
def test_the_address_is_a_loopback_one(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["0.0.0.0:8080", "10.1.2.3:80", "example.com:80", "127.0.0.1", ":80",
                                  "127.0.0.1:99999"])
def test_other_addresses_are_refused_with_what_to_do(text: str) -> None:
    with pytest.raises(UsageFailed, match=r"127\.0\.0\.1:PORT"):
        parse_address(text)


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip, deflate, br", True), ("GZIP", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True),
    ("", False), ("identity", False), ("gzip;q=0", False), ("gzip;q=0.0, br", False), ("gzip;q=x", False),
    ("deflate, br", False),
])
def test_gzip_is_used_when_the_browser_accepts_it(header: str, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_the_stream_is_gzip_flushed_after_every_event_and_the_assets_are_compressed() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry, kv: MemoryKV, feed: Any) -> None:
        for index in range(200):
            await start_unit(registry, f"unit-{index:03}.service")
        gzip = {"Accept-Encoding": "gzip"}
        raw = await client.get("/dashboard/events", headers=gzip, auto_decompress=False)
        assert raw.headers["Content-Encoding"] == "gzip" and raw.headers["Vary"] == "Accept-Encoding"
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text, wire = "", 0

        async def until(needle: str) -> None:
            nonlocal text, wire
            while needle not in text:  # every event decodes from the bytes sent so far: nothing held back
                chunk = await asyncio.wait_for(raw.content.readany(), 5)
                assert chunk, "stream ended"
                wire += len(chunk)
                text += inflate.decompress(chunk).decode()

        await until("event: snapshot")
        await until("\n\n")
        snapshot = text[text.index("data: ") + 6 :].split("\n", 1)[0]
        assert len(json.loads(snapshot)["units"]) == 200
        assert wire * 5 < len(text), (wire, len(text))  # 200 similar rows compress well
        await start_unit(registry, "late.service")
        await until('"late.service"')
        raw.close()
        plain = await client.get("/dashboard/events", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert (await plain.content.readline()) == b"retry: 2000\n"
        plain.close()
        for path in ("/", "/dashboard/static/app.js", "/dashboard/static/app.css"):
            asset = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
            body = await asset.read()
            assert asset.headers["Content-Encoding"] == "gzip", path
            assert len(zlib.decompress(body, 16 + zlib.MAX_WBITS)) > 2 * len(body), path
        page = await client.get("/dashboard/units/late.service", headers={"Accept-Encoding": "gzip"},
                                auto_decompress=False)
        assert page.headers["Content-Encoding"] == "gzip"
        assert json.loads(zlib.decompress(await page.read(), 16 + zlib.MAX_WBITS))["unit"]["name"] == (
            "late.service")

    run(scenario)
