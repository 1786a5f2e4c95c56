"""fleet's v1 API on a real etcd, served on a unix socket in a tmp dir: create, list, state, destroy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from devcluster.etcd import free_port
from fleetd import metrics
from fleetd.api.app import UNAVAILABLE
from fleetd.api.listen import ApiServer
from fleetd.model import MachineID, MachineState, UnitName, UnitState
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile
from fleetd.units import new_record
from tests.integration.discovery_client import UnixHTTP, generate

V1 = "http://fleet/fleet/v1"
OPTIONS = [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"}]


def test_api_on_a_unix_socket_over_real_etcd(
    aio: asyncio.Runner, etcd_kv: EtcdKV, etcd_prefix: str, tmp_path: Path
) -> None:
    socket_path = str(tmp_path / "fleet.sock")

    async def scenario() -> None:
        registry = Registry(etcd_kv, etcd_prefix)
        server = asyncio.create_task(
            ApiServer(registry, socket_path=socket_path, listen="", token_limit=100).run()
        )
        try:
            for _ in range(500):  # up to 10 s for the socket to appear
                if await asyncio.to_thread(os.path.exists, socket_path):
                    break
                await asyncio.sleep(0.02)
            assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) as http:
                created = await http.put(f"{V1}/units/hello.service", json={"options": OPTIONS})
                assert created.status == 201
                page = await (await http.get(f"{V1}/units")).json()
                assert [unit["name"] for unit in page["units"]] == ["hello.service"]
                assert page["units"][0]["options"] == OPTIONS
                lease = await etcd_kv.grant(30)
                await registry.publish_state(
                    UnitState(
                        UnitName("hello.service"), MachineID("m1"), "loaded", "active", "running", "0" * 40
                    ),
                    lease,
                )
                await registry.register_machine(MachineState(MachineID("m1"), "10.0.0.1"), lease)
                states = await (await http.get(f"{V1}/state", params={"unitName": "hello.service"})).json()
                assert [(s["machineID"], s["systemdActiveState"]) for s in states["states"]] == [
                    ("m1", "active")
                ]
                machines = await (await http.get(f"{V1}/machines")).json()
                assert machines["machines"] == [{"id": "m1", "primaryIP": "10.0.0.1"}]
                assert (await http.delete(f"{V1}/units/hello.service")).status == 204
                assert (await http.get(f"{V1}/units/hello.service")).status == 404
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    aio.run(scenario())


@contextlib.contextmanager
def serving(endpoints: list[str], prefix: str, socket_path: str) -> Iterator[Registry]:
    """fleetd's API on ``socket_path`` over etcd at ``endpoints``, on its own event loop in a thread (so
    blocking clients can call it); stopped, and its etcd client closed, also on failure."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        kv = EtcdKV(endpoints, request_timeout=2.0, observe=metrics.observe_etcd_request)
        registry = Registry(kv, prefix)
        holder["registry"] = registry
        holder["task"] = asyncio.current_task()
        server = ApiServer(registry, socket_path=socket_path, listen="", token_limit=100)
        try:
            started.set()
            await server.run()
        finally:
            await kv.close()

    def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the API did not start"
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path):
            assert time.monotonic() < deadline, f"no API socket at {socket_path}"
            time.sleep(0.02)
        yield holder["registry"]
    finally:
        loop.call_soon_threadsafe(holder["task"].cancel)
        thread.join(30)
        loop.close()


def _sample(reply_text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in reply_text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_a_client_generated_from_discovery_drives_the_api_over_real_etcd(
    etcd_server: Any, etcd_prefix: str, tmp_path: Path, aio: asyncio.Runner, etcd_kv: EtcdKV
) -> None:
    socket_path = str(tmp_path / "fleet.sock")
    http = UnixHTTP(socket_path)
    with serving([etcd_server.endpoint], etcd_prefix, socket_path) as registry:
        api = generate(http, "/fleet/v1/discovery")
        scrape = http.request("GET", "/metrics").body
        requests_before = _sample(scrape, "fleet_etcd_request_duration_seconds_count")
        # create, change the desired state, read back
        assert api.Units.Set(unitName="hello.service", body={"options": OPTIONS}).status == 201
        assert api.Units.Set(unitName="hello.service", body={"desiredState": "launched"}).status == 204
        got = api.Units.Get(unitName="hello.service")
        assert (got.status, got.body["desiredState"], got.body["options"]) == (200, "launched", OPTIONS)
        # every error code, with fleet's messages
        errors = [
            (api.Units.Set(unitName="x.service", body={"desiredState": "launched"}), 409,
             "unit does not exist and options field empty"),
            (api.Units.Set(unitName="hello.service", body={}), 409,
             "must provide DesiredState to update existing unit"),
            (api.Units.Set(unitName="bad", body={"options": OPTIONS}), 400, None),
            (api.Units.Set(unitName="a.service", body={"name": "b.service", "options": OPTIONS}), 400,
             'name in URL "a.service" differs from unit name in request body "b.service"'),
            (api.Units.Get(unitName="nope.service"), 404, "unit does not exist"),
            (api.Units.Delete(unitName="nope.service"), 404, "unit does not exist"),
            (api.Units.List(nextPageToken="EwBMLg=="), 400, "token limit must be 100"),
            (api.Machines.PatchMachine(machineID="m9", body=[
                {"op": "add", "path": "/metadata/disk", "value": "ssd"}]), 404, "machine does not exist"),
            (api.Machines.Patch(body=[{"op": "noop", "path": "/m1/metadata/a"}]), 400,
             "invalid op: expect add, remove, or replace"),
            (http.request("POST", "/fleet/v1/units"), 405, ""),
            (http.request("PUT", "/fleet/v1/units/a.service", b"{}", {"Content-Type": "text/plain"}), 415,
             "only acceptable Content-Type is application/json"),
        ]
        for reply, status, message in errors:
            assert reply.status == status, reply
            assert reply.body["error"]["code"] == status
            if message is not None:
                assert reply.body["error"]["message"] == message
        # pagination over 1,000 units, written as fleetctl writes them
        texts = [UnitFile.from_text(f"[Service]\nExecStart=/bin/sleep {i}\n") for i in range(1000)]
        records = [new_record(f"bulk-{i:04}.service", text) for i, text in enumerate(texts)]
        aio.run(etcd_kv.put(f"{etcd_prefix}schema", "1"))

        async def bulk() -> None:
            await Registry(etcd_kv, etcd_prefix).put_units(records)

        aio.run(bulk())
        names: list[str] = []
        pages = 0
        token: dict[str, str] = {}
        while True:
            page = api.Units.List(**token)
            assert page.status == 200
            pages += 1
            names += [unit["name"] for unit in page.body["units"]]
            if "nextPageToken" not in page.body:
                break
            token = {"nextPageToken": page.body["nextPageToken"]}
        assert names == sorted([*(r.name for r, _ in records), "hello.service"]) and pages == 11
        # live metadata on a registered machine
        async def register() -> None:
            lease = await etcd_kv.grant(60)
            await Registry(etcd_kv, etcd_prefix).register_machine(
                MachineState(MachineID("m1"), "10.0.0.1", {"hostname": "a"}), lease)

        aio.run(register())
        add = {"op": "add", "path": "/m1/metadata/disk", "value": {"value": "ssd"}}
        patched = api.Machines.Patch(body=[add])
        assert patched.status == 204
        assert api.Machines.List().body["machines"] == [
            {"id": "m1", "primaryIP": "10.0.0.1", "metadata": {"disk": "ssd", "hostname": "a"}}]
        assert api.Units.Delete(unitName="hello.service").status == 204
        # the metrics moved with the requests above
        scrape = http.request("GET", "/metrics").body
        assert _sample(scrape, "fleet_etcd_request_duration_seconds_count") > requests_before
        assert registry is not None


def test_an_unreachable_etcd_is_503_on_every_route(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "fleet.sock")
    http = UnixHTTP(socket_path)
    dead = f"http://127.0.0.1:{free_port()}"
    with serving([dead], "/t/dead/", socket_path):
        api = generate(http, "/fleet/v1/discovery")  # served without etcd
        for reply in (
            api.Units.List(), api.Units.Get(unitName="a.service"), api.Units.Delete(unitName="a.service"),
            api.Units.Set(unitName="a.service", body={"options": OPTIONS}), api.UnitState.List(),
            api.Machines.List(), api.Machines.Patch(body=[{"op": "remove", "path": "/m1/metadata/a"}]),
        ):
            assert reply.status == 503, reply
            assert reply.body == {"error": {"code": 503, "message": UNAVAILABLE}}
