"""fleet's v1 API on MemoryKV through aiohttp's test client: every endpoint, pagination, every error code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetd import metrics
from fleetd.api.app import LISTINGS_KEY, UNAVAILABLE, make_app
from fleetd.api.pagination import PageToken, TokenError, parse_tokens
from fleetd.errors import RegistryUnavailable
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry

V1 = "/fleet/v1"
HELLO = [
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]

Scenario = Callable[[TestClient[Any, Any], Registry], Awaitable[None]]


def run(scenario: Scenario, *, limit: int = 100, kv: Any = None) -> None:
    async def main() -> None:
        registry = Registry(kv or MemoryKV())
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(registry, token_limit=limit)))
        await client.start_server()
        try:
            await scenario(client, registry)
        finally:
            await client.close()

    asyncio.run(main())


async def put(client: TestClient[Any, Any], name: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.put(f"{V1}/units/{name}", json=body)
    data = await response.json() if response.status >= 400 else None
    return response.status, data


def test_create_get_list_change_and_delete_a_unit() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        assert await put(client, "hello.service", {"options": HELLO}) == (201, None)
        response = await client.get(f"{V1}/units/hello.service")
        assert response.status == 200
        assert response.headers["Server"].startswith("fleetd/")
        assert await response.json() == {
            "name": "hello.service",
            "options": HELLO,
            "desiredState": "inactive",
            "currentState": "inactive",
        }
        assert await put(client, "hello.service", {"desiredState": "launched"}) == (204, None)
        record = await registry.get_unit("hello.service")
        assert record is not None and record.target_state is TargetState.LAUNCHED
        page = await (await client.get(f"{V1}/units")).json()
        assert [(u["name"], u["desiredState"]) for u in page["units"]] == [("hello.service", "launched")]
        assert "nextPageToken" not in page
        assert (await client.delete(f"{V1}/units/hello.service")).status == 204
        assert await registry.get_unit("hello.service") is None

    run(scenario)


def test_put_with_new_options_replaces_the_unit_and_resets_its_state() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        await put(client, "a.service", {"options": HELLO, "desiredState": "launched"})
        changed = [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]
        assert await put(client, "a.service", {"options": changed}) == (201, None)
        record = await registry.get_unit("a.service")
        assert record is not None and record.target_state is TargetState.INACTIVE
        # the same options and a state: a state change
        assert await put(client, "a.service", {"options": changed, "desiredState": "loaded"}) == (204, None)

    run(scenario)


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        (
            "a.service",
            {"name": "b.service", "options": HELLO},
            400,
            'name in URL "a.service" differs from unit name in request body "b.service"',
        ),
        ("a.service", {}, 409, "unit does not exist and options field empty"),
        ("a", {"options": HELLO}, 400, 'unit name must contain "."'),
        (
            "t@.service",
            {"options": HELLO, "desiredState": "launched"},
            400,
            'cannot activate template "t@.service"',
        ),
        (
            "a.service",
            {"options": HELLO, "desiredState": "running"},
            400,
            "invalid target state 'running' (expected inactive, loaded or launched)",
        ),
        (
            "a.service",
            {
                "options": [
                    {"section": "X-Fleet", "name": "Global", "value": "true"},
                    {"section": "X-Fleet", "name": "MachineOf", "value": "b.service"},
                ]
            },
            400,
            "invalid unit options: ",
        ),
        ("a.service", {"options": [{"section": 1}]}, 400, "unable to decode body: "),
    ],
    ids=[
        "name mismatch",
        "absent without options",
        "bad name",
        "template launched",
        "bad state",
        "bad X-Fleet option",
        "option not a string",
    ],
)
def test_put_refuses_bad_requests_with_fleets_messages(
    name: str, body: dict[str, Any], status: int, message: str
) -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        got_status, data = await put(client, name, body)
        assert got_status == status
        assert data["error"]["code"] == status
        assert data["error"]["message"].startswith(message)

    run(scenario)


def test_put_of_an_existing_unit_without_a_state_is_a_conflict() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        await put(client, "a.service", {"options": HELLO})
        status, data = await put(client, "a.service", {})
        assert (status, data["error"]["message"]) == (
            409,
            "must provide DesiredState to update existing unit",
        )

    run(scenario)


def test_put_content_type_and_body_errors() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        response = await client.put(
            f"{V1}/units/a.service", data=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert response.status == 415
        assert (await response.json())["error"][
            "message"
        ] == "only acceptable Content-Type is application/json"
        response = await client.put(
            f"{V1}/units/a.service", data=b"{", headers={"Content-Type": "application/json"}
        )
        assert response.status == 400
        assert (await response.json())["error"]["message"].startswith("unable to decode body")

    run(scenario)


def test_missing_units_and_states_are_404_and_other_methods_405() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        for method, path, message in [
            ("GET", f"{V1}/units/nope.service", "unit does not exist"),
            ("DELETE", f"{V1}/units/nope.service", "unit does not exist"),
            ("GET", f"{V1}/state/nope.service", "unit state does not exist"),
            ("GET", f"{V1}/nothing", ""),
        ]:
            response = await client.request(method, path)
            assert response.status == 404, path
            assert await response.json() == {"error": {"code": 404, "message": message}}
        assert (await client.post(f"{V1}/units")).status == 405
        assert (await client.get(V1)).status == 405

    run(scenario)


def test_units_page_over_a_thousand_units_with_next_page_tokens() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        from fleetd.unitfile.unit import UnitFile  # noqa: PLC0415
        from fleetd.units import new_record  # noqa: PLC0415

        unit_file = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])
        await registry.put_units([new_record(f"u{i:04d}.service", unit_file) for i in range(1001)])
        names: list[str] = []
        token = None
        pages = 0
        while True:
            params: dict[str, str] = {"nextPageToken": token} if token else {}
            page = await (await client.get(f"{V1}/units", params=params)).json()
            pages += 1
            names += [unit["name"] for unit in page["units"]]
            token = page.get("nextPageToken")
            if token is None:
                break
        assert pages == 11
        assert names == [f"u{i:04d}.service" for i in range(1001)]
        assert client.app is not None
        assert client.app[LISTINGS_KEY].reads == 1  # 11 pages, the list read once: nothing changed

    run(scenario)


def test_a_change_between_pages_reads_the_list_anew() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        from fleetd.unitfile.unit import UnitFile  # noqa: PLC0415
        from fleetd.units import new_record  # noqa: PLC0415

        unit_file = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])
        await registry.put_units([new_record(f"u{i}.service", unit_file) for i in range(3)])
        first = await (await client.get(f"{V1}/units")).json()
        await registry.put_units([new_record("u9.service", unit_file)])
        second = await (await client.get(f"{V1}/units")).json()
        assert [u["name"] for u in first["units"]] == ["u0.service", "u1.service", "u2.service"]
        assert [u["name"] for u in second["units"]][-1] == "u9.service"
        assert client.app is not None
        assert client.app[LISTINGS_KEY].reads == 2

    run(scenario)


def test_bad_page_tokens_are_400() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        for query, message in [
            ("nextPageToken=ZABMLg%3D%3D&nextPageToken=x", "too many values for page token"),
            ("nextPageToken=_wMAAA%3D%3D", "token limit must be 100"),
            ("nextPageToken=ZAAAAA%3D%3D", "token page must be greater than zero"),
        ]:
            response = await client.get(f"{V1}/units?{query}")
            assert response.status == 400
            assert (await response.json())["error"]["message"] == message

    run(scenario)


@pytest.mark.parametrize(
    ("token", "limit", "page"),
    [("wjAAAA==", 12482, 0), ("EwBMLg==", 19, 11852), ("_wMAAA==", 1023, 0), ("LQAJAA==", 45, 9)],
)
def test_page_tokens_encode_as_fleets(token: str, limit: int, page: int) -> None:
    assert PageToken(limit, page).encode() == token
    assert PageToken.decode(token) == PageToken(limit, page)


def test_an_empty_token_is_invalid() -> None:
    with pytest.raises(TokenError):
        parse_tokens([""], 100)


def test_states_with_filters_and_machines() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        kv = registry.kv
        lease = await kv.grant(30)
        for machine in ("m1", "m2"):
            await registry.register_machine(
                MachineState(MachineID(machine), "10.0.0.1", {"role": "web"}), lease
            )
            for unit in ("a.service", "b.service"):
                await registry.publish_state(
                    UnitState(UnitName(unit), MachineID(machine), "loaded", "active", "running", "0" * 40),
                    lease,
                )
        states = (await (await client.get(f"{V1}/state")).json())["states"]
        assert len(states) == 4
        assert states[0] == {
            "name": "a.service",
            "hash": "0" * 40,
            "machineID": "m1",
            "systemdLoadState": "loaded",
            "systemdActiveState": "active",
            "systemdSubState": "running",
        }
        page = await (
            await client.get(f"{V1}/state", params={"machineID": "m2", "unitName": "b.service"})
        ).json()
        assert [(s["name"], s["machineID"]) for s in page["states"]] == [("b.service", "m2")]
        one = await (await client.get(f"{V1}/state/a.service")).json()
        assert one["name"] == "a.service"
        machines = await (await client.get(f"{V1}/machines")).json()
        assert machines == {
            "machines": [
                {"id": "m1", "primaryIP": "10.0.0.1", "metadata": {"role": "web"}},
                {"id": "m2", "primaryIP": "10.0.0.1", "metadata": {"role": "web"}},
            ]
        }

    run(scenario)


def test_discovery_document_names_fleets_resources() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        for prefix in (V1, "/v1-alpha"):
            document = await (await client.get(f"{prefix}/discovery")).json()
            assert document["kind"] == "discovery#restDescription"
            assert document["basePath"] == "/fleet/v1/"
            assert set(document["schemas"]) == {
                "Machine",
                "MachinePage",
                "UnitOption",
                "Unit",
                "UnitPage",
                "UnitState",
                "UnitStatePage",
                "MetadataOperation",
                "MetadataPatch",
            }
            methods = document["resources"]["Units"]["methods"]
            assert {m["httpMethod"] for m in methods.values()} == {"GET", "PUT", "DELETE"}

    run(scenario)


class UnreachableKV(MemoryKV):
    async def range(self, *args: Any, **kwargs: Any) -> Any:
        raise RegistryUnavailable("etcd down")

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        raise RegistryUnavailable("etcd down")


def test_an_unreachable_etcd_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        for method, path in [
            ("GET", f"{V1}/units"),
            ("GET", f"{V1}/state"),
            ("GET", f"{V1}/machines"),
            ("GET", f"{V1}/units/a.service"),
            ("DELETE", f"{V1}/units/a.service"),
        ]:
            response = await client.request(method, path)
            assert response.status == 503, path
            assert await response.json() == {"error": {"code": 503, "message": UNAVAILABLE}}
        status, data = await put(client, "a.service", {"options": HELLO})
        assert (status, data["error"]["message"]) == (503, UNAVAILABLE)

    run(scenario, kv=UnreachableKV())


def test_metrics_are_served_and_move() -> None:
    async def scenario(client: TestClient[Any, Any], registry: Registry) -> None:
        before = metrics.sample("fleet_agent_tasks_total", {"kind": "start", "result": "ok"})
        metrics.AGENT_TASKS.labels("start", "ok").inc()
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('fleet_agent_tasks_total{kind="start",result="ok"}')
        )
        assert float(line.split()[-1]) == (before or 0) + 1
        for name in (
            "fleet_engine_passes_total",
            "fleet_engine_leader",
            "fleet_etcd_request_duration_seconds",
            "fleet_lease_keepalive_lag_seconds",
            "fleet_engine_unplaceable_units",
            "fleet_engine_watch_lag_seconds",
        ):
            assert f"# TYPE {name.removesuffix('_total')}" in text

    run(scenario)
