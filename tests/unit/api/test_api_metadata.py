"""PATCH of machines' live metadata and single-unit reads through the API (MemoryKV, aiohttp test client)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from fleetd.api.app import UNAVAILABLE
from fleetd.metadata import INVALID_OP, INVALID_PATH, INVALID_VALUE
from fleetd.model import MachineID, MachineState, TargetState
from fleetd.registry import keyspace as ks
from fleetd.registry.registry import Registry
from tests.unit.api.test_api import HELLO, V1, Scenario, UnreachableKV, put, run
from tests.unit.fleetctl.test_list_cat import CountingKV

M0 = MachineState(MachineID("m0"), "10.0.0.1", {"hostname": "smoke0"})
M1 = MachineState(MachineID("m1"), "10.0.0.2", {"hostname": "smoke1", "ping": "pong"})


def with_machines(scenario: Scenario) -> Scenario:
    async def wrapped(client: TestClient[Any, Any], registry: Registry) -> None:
        lease = await registry.kv.grant(60)
        for machine in (M0, M1):
            await registry.register_machine(machine, lease)
        await scenario(client, registry)

    return wrapped


async def metadata(client: TestClient[Any, Any]) -> dict[str, Any]:
    page = await (await client.get(f"{V1}/machines")).json()
    return {machine["id"]: machine.get("metadata", {}) for machine in page["machines"]}


def test_fleets_patch_of_machines_adds_replaces_and_removes() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        response = await client.patch(f"{V1}/machines", json=[
            {"op": "add", "path": "/m0/metadata/foo", "value": {"value": "bar"}},
            {"op": "replace", "path": "/m1/metadata/ping", "value": {"value": "splat"}},
        ])
        assert response.status == 204
        assert await metadata(client) == {
            "m0": {"foo": "bar", "hostname": "smoke0"}, "m1": {"ping": "splat", "hostname": "smoke1"},
        }
        response = await client.patch(f"{V1}/machines", json=[
            {"op": "remove", "path": "/m0/metadata/foo"}, {"op": "remove", "path": "/m1/metadata/ping"},
        ])
        assert response.status == 204
        assert await metadata(client) == {"m0": {"hostname": "smoke0"}, "m1": {"hostname": "smoke1"}}

    run(with_machines(scenario))


def test_patch_of_one_machine_and_its_404() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        ops = [{"op": "add", "path": "/metadata/disk", "value": "ssd"}]
        assert (await client.patch(f"{V1}/machines/m1", json=ops)).status == 204
        assert (await metadata(client))["m1"] == {"disk": "ssd", "hostname": "smoke1", "ping": "pong"}
        missing = await client.patch(f"{V1}/machines/m7", json=ops)
        assert missing.status == 404
        assert await missing.json() == {"error": {"code": 404, "message": "machine does not exist"}}
        # a machine that is down but has live metadata can still be changed
        await registry.kv.put(registry.keys.machine_metadata("m8"), ks.encode_metadata({"a": "b"}))
        assert (await client.patch(f"{V1}/machines/m8", json=ops)).status == 204
        assert (await client.get(f"{V1}/machines/m1")).status == 405

    run(with_machines(scenario))


def test_bad_patches_are_400_with_fleets_messages_and_write_nothing() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        good = {"op": "add", "path": "/m0/metadata/foo", "value": {"value": "bar"}}
        for body, message in [
            ([good, {"op": "noop", "path": "/m0/metadata/foo"}], INVALID_OP),
            ([good, {"op": "add", "path": "/m0/foo", "value": "x"}], INVALID_PATH),
            ([good, {"op": "add", "path": "/m0/metadata/foo", "value": {"value": ""}}], INVALID_VALUE),
        ]:
            response = await client.patch(f"{V1}/machines", json=body)
            assert response.status == 400
            assert await response.json() == {"error": {"code": 400, "message": message}}
        response = await client.patch(f"{V1}/machines", data=b"{not json")
        assert response.status == 400
        assert (await response.json())["error"]["message"].startswith("unable to decode body")
        assert await registry.read_metadata() == {}

    run(with_machines(scenario))


def test_patch_with_etcd_unreachable_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        ops = [{"op": "add", "path": "/m0/metadata/foo", "value": "bar"}]
        for path in (f"{V1}/machines", f"{V1}/machines/m0"):
            response = await client.patch(path, json=ops if path.endswith("machines") else [
                {"op": "add", "path": "/metadata/foo", "value": "bar"}])
            assert response.status == 503
            assert await response.json() == {"error": {"code": 503, "message": UNAVAILABLE}}
        assert (await client.get(f"{V1}/state/a.service")).status == 503
        assert (await client.get(f"{V1}/discovery")).status == 200

    run(scenario, kv=UnreachableKV())


def test_getting_one_unit_costs_the_same_requests_whatever_the_number_of_units() -> None:
    counts = []
    for units in (3, 300):
        async def scenario(client: TestClient[Any, Any], registry: Registry, units: int = units) -> None:
            lease = await registry.kv.grant(60)
            await registry.register_machine(M0, lease)
            for index in range(units):
                await put(client, f"u{index}.service", {"options": HELLO, "desiredState": "launched"})
            record = await registry.get_unit("u1.service")
            assert record is not None
            scheduled = ks.encode_schedule(record.hash, TargetState.LAUNCHED)
            await registry.kv.put(registry.keys.scheduled("m0", "u1.service"), scheduled)
            counting = CountingKV(registry.kv)
            registry.kv = counting  # type: ignore[assignment]
            response = await client.get(f"{V1}/units/u1.service")
            assert response.status == 200
            body = await response.json()
            shown = (body["machineID"], body["desiredState"], body["currentState"])
            assert shown == ("m0", "launched", "inactive")
            counts.append(counting.calls)

        run(scenario)
    assert counts[0] == counts[1] <= 6


def test_delete_of_live_metadata_brings_back_the_configured_values() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        ops = [
            {"op": "add", "path": "/metadata/ping", "value": "splat"},
            {"op": "add", "path": "/metadata/a", "value": "b"},
            {"op": "remove", "path": "/metadata/hostname"},
        ]
        assert (await client.patch(f"{V1}/machines/m1", json=ops)).status == 204
        assert (await metadata(client))["m1"] == {"ping": "splat", "a": "b"}
        # fleet's remove hides a configured key; DELETE of one key brings its configured value back
        assert (await client.delete(f"{V1}/machines/m1/metadata/hostname")).status == 204
        assert (await metadata(client))["m1"] == {"ping": "splat", "a": "b", "hostname": "smoke1"}
        assert (await client.delete(f"{V1}/machines/m1/metadata/a")).status == 204
        assert (await metadata(client))["m1"] == {"ping": "splat", "hostname": "smoke1"}
        assert (await client.delete(f"{V1}/machines/m1/metadata/never-set")).status == 204
        # and DELETE of the whole metadata drops every override
        assert (await client.delete("/v1-alpha/machines/m1/metadata")).status == 204
        assert (await metadata(client))["m1"] == {"ping": "pong", "hostname": "smoke1"}
        assert await registry.read_metadata() == {}
        # an entry that does not decode is dropped too
        await registry.kv.put(registry.keys.machine_metadata("m0"), "{not json")
        assert (await client.delete(f"{V1}/machines/m0/metadata/foo")).status == 204
        assert await registry.kv.get(registry.keys.machine_metadata("m0")) is None
        await registry.kv.put(registry.keys.machine_metadata("m9"), "{not json")  # a machine that is down
        assert (await client.delete(f"{V1}/machines/m9/metadata")).status == 204
        assert await registry.kv.get(registry.keys.machine_metadata("m9")) is None
        missing = await client.delete(f"{V1}/machines/m7/metadata")
        assert missing.status == 404
        assert await missing.json() == {"error": {"code": 404, "message": "machine does not exist"}}
        for path, problem in [
            ("m1/metadata/a=b", "must not contain"),
            ("m1/metadata/fleet.max-units", "unit cap"),
            ("-m1/metadata", "is not a machine ID"),
        ]:
            response = await client.delete(f"{V1}/machines/{path}")
            assert response.status == 400, path
            message = (await response.json())["error"]["message"]
            assert message.startswith(f"{INVALID_PATH}: ") and problem in message, message

    run(with_machines(scenario))


def test_delete_of_live_metadata_with_etcd_unreachable_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        response = await client.delete(f"{V1}/machines/m1/metadata")
        assert response.status == 503
        assert await response.json() == {"error": {"code": 503, "message": UNAVAILABLE}}

    run(scenario, kv=UnreachableKV())
