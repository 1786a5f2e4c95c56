"""fleet's v1 API end to end on the nspawn cluster, through fleetd's unix socket inside a machine (reached
from the host through the machine's root, ``/proc/<its PID 1>/root/run/fleet.sock``), with a client generated
from the discovery document: a unit's life (create, start, active, stop, destroy), moving metrics, and live
metadata moving a unit with ``MachineMetadata`` from machine to machine (fleetctl set-metadata too)."""

from __future__ import annotations

import asyncio
from typing import Any

from devcluster.nspawn import Machine
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.keyspace import Keyspace
from fleetd.unitfile.unit import UnitFile
from tests.integration.discovery_client import UnixHTTP, generate
from tests.integration.e2e.harness import FIXTURES, FleetCluster, eventually
from tests.integration.e2e.waits import wait_for_active

WAIT = 180.0


def socket_of(machine: Machine) -> UnixHTTP:
    # /var/run is a link to /run inside the machine: name the target, so the path resolves in its root
    return UnixHTTP(f"/proc/{machine.leader}/root/run/fleet.sock")


def options(name: str) -> list[dict[str, str]]:
    unit_file = UnitFile.from_text((FIXTURES / name).read_text())
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit_file.options]


def tasks_run(fleet: FleetCluster) -> float:
    """fleet_agent_tasks_total summed over every machine's /metrics."""
    total = 0.0
    for machine in fleet.machines:
        text = socket_of(machine).request("GET", "/metrics").body
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("fleet_agent_tasks_total{"))
    return total


def states(api: Any, name: str) -> list[dict[str, str]]:
    reply = api.UnitState.List(unitName=name)
    assert reply.status == 200, reply
    return list(reply.body.get("states", []))


def test_a_units_life_through_the_api_socket(fleet: FleetCluster) -> None:
    http = socket_of(fleet.machines[0])
    api = generate(http, "/fleet/v1/discovery")
    before = tasks_run(fleet)
    created = api.Units.Set(unitName="hello.service", body={"options": options("hello.service"),
                                                              "desiredState": "launched"})
    assert created.status == 201, created
    up = eventually(lambda: states(api, "hello.service"),
                    lambda s: [x.get("systemdActiveState") for x in s] == ["active"], WAIT, "hello active")
    unit = api.Units.Get(unitName="hello.service").body
    assert (unit["desiredState"], unit["currentState"], unit["machineID"]) == (
        "launched", "launched", up[0]["machineID"])
    assert api.Units.Set(unitName="hello.service", body={"desiredState": "loaded"}).status == 204
    eventually(lambda: states(api, "hello.service"),
               lambda s: [x.get("systemdActiveState") for x in s] == ["inactive"], WAIT, "hello stopped")
    assert api.Units.Delete(unitName="hello.service").status == 204
    eventually(lambda: states(api, "hello.service"), lambda s: s == [], WAIT, "hello gone")
    assert api.Units.Get(unitName="hello.service").status == 404
    assert tasks_run(fleet) >= before + 4  # load, start, stop, unload at least


def _forget_live_metadata(fleet: FleetCluster) -> None:
    async def go() -> None:
        kv = EtcdKV(fleet.etcd.endpoint.split(","), request_timeout=10.0)
        try:
            await kv.delete(Keyspace().metadata, prefix=True)
        finally:
            await kv.close()

    asyncio.run(go())


def test_live_metadata_moves_a_unit_there_and_back(fleet: FleetCluster) -> None:
    web = [m for m in fleet.machines if "role=web" in fleet.metadata[m.name]]
    (db,) = [m for m in fleet.machines if m not in web]
    api = generate(socket_of(db), "/fleet/v1/discovery")
    try:
        fleet.ok("start", "web.service")
        (host,) = wait_for_active(fleet, 1)["web.service"]
        assert host in {m.machine_id for m in web}
        # only the db machine keeps role=web: the unit has to move there
        ops = [{"op": "add", "path": f"/{db.machine_id}/metadata/role", "value": {"value": "web"}}]
        ops += [{"op": "remove", "path": f"/{m.machine_id}/metadata/role"} for m in web]
        assert api.Machines.Patch(body=ops).status == 204
        listed = {m["id"]: m.get("metadata", {}) for m in api.Machines.List().body["machines"]}
        assert listed[db.machine_id]["role"] == "web" and all("role" not in listed[m.machine_id] for m in web)
        assert wait_for_active(fleet, 1, WAIT)["web.service"] == [db.machine_id]
        # and back with fleetctl, which names the move before the engine makes it
        fleet.ok("set-metadata", web[0].machine_id, "role=web")
        out = fleet.ok("unset-metadata", db.machine_id, "role")
        assert f"Planned: move web.service from {db.machine_id[:8]}... to {web[0].machine_id[:8]}..." in out
        assert wait_for_active(fleet, 1, WAIT)["web.service"] == [web[0].machine_id]
    finally:
        _forget_live_metadata(fleet)
