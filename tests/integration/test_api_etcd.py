"""fleet's v1 API on a real etcd, served on a unix socket in a tmp dir: create, list, state, destroy."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp

from fleetd.api.listen import ApiServer
from fleetd.model import MachineID, MachineState, UnitName, UnitState
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry

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
