"""fleet's v1 API as an aiohttp application, on the one Registry that fleetctl uses.

Routes (each under ``/fleet/v1`` and the legacy ``/v1-alpha``): ``discovery``, ``units`` (paginated),
``units/{name}`` (GET, PUT, DELETE), ``state`` (paginated; ``machineID`` and ``unitName`` filters),
``state/{name}``, ``machines`` (paginated; PATCH, and DELETE ``machines/{id}/metadata[/{key}]`` for live
metadata); ``/metrics`` at the root. Errors are JSON
``{"error": {"code": <status>, "message": "<text>"}}``; an unreachable etcd is ``503``. Every response carries
``Server: fleetd/<version>``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from fleetd.api.discovery import DOCUMENT
from fleetd.api.listing import Listings
from fleetd.api.pagination import PageToken, TokenError, page_of, parse_tokens
from fleetd.errors import FleetError, RegistryUnavailable, UnitFileError, UnitNameError
from fleetd.metadata import INVALID_PATH, PatchError, check_key, check_machine_id, parse_patch
from fleetd.model import VERSION, MachineID, MachineState, TargetState, UnitState
from fleetd.registry.registry import Registry
from fleetd.unitfile.body import checked_unit_file
from fleetd.unitfile.names import UnitNameInfo, validate_unit_name
from fleetd.unitfile.unit import UnitFile
from fleetd.units import UnitView, new_record, unit_view, unit_views

__all__ = ["PREFIXES", "UNAVAILABLE", "ApiError", "make_app"]

PREFIXES = ("/fleet/v1", "/v1-alpha")
UNAVAILABLE = "fleet server unable to communicate with etcd"

REGISTRY_KEY = web.AppKey("registry", Registry)
LISTINGS_KEY = web.AppKey("listings", Listings)
LIMIT_KEY = web.AppKey("token_limit", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except TokenError as exc:
        return _error(400, str(exc))
    except RegistryUnavailable:
        return _error(503, UNAVAILABLE)
    except FleetError as exc:
        return _error(500, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, "" if exc.status in (404, 405) else exc.text or "")


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = f"fleetd/{VERSION}"


# JSON shapes (fleet's names; empty fields omitted) ---------------------------------------------------------


def _options(body: str | None) -> list[dict[str, str]]:
    if not body:
        return []
    try:
        unit_file = UnitFile.from_text(body)
    except FleetError:
        return []
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit_file.options]


def _unit_json(view: UnitView, body: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": view.record.name, "options": _options(body),
                           "desiredState": view.record.target_state.value}
    if view.current is not None:
        out["currentState"] = view.current.value
    if view.machine_id:
        out["machineID"] = view.machine_id
    return out


def _state_json(state: UnitState) -> dict[str, str]:
    fields = {
        "name": state.name, "hash": state.hash, "machineID": state.machine_id,
        "systemdLoadState": state.load_state, "systemdActiveState": state.active_state,
        "systemdSubState": state.sub_state,
    }
    return {key: value for key, value in fields.items() if value}


def _machine_json(machine: MachineState) -> dict[str, Any]:
    out: dict[str, Any] = {"id": machine.id}
    if machine.public_ip:
        out["primaryIP"] = machine.public_ip
    if machine.metadata:
        out["metadata"] = dict(machine.metadata)
    return out


def _page_json(kind: str, items: list[Any], following: PageToken | None) -> dict[str, Any]:
    out: dict[str, Any] = {kind: items}
    if following is not None:
        out["nextPageToken"] = following.encode()
    return out


def _token(request: web.Request) -> PageToken:
    return parse_tokens(request.query.getall("nextPageToken", []), request.app[LIMIT_KEY])


# Handlers -----------------------------------------------------------------------------------------------


async def discovery(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


async def list_units(request: web.Request) -> web.Response:
    token = _token(request)
    registry = request.app[REGISTRY_KEY]
    views = await request.app[LISTINGS_KEY].get("units", lambda: unit_views(registry))
    page, following = page_of(views, token)
    bodies = await registry.get_bodies(view.record.hash for view in page)
    units = [_unit_json(view, bodies.get(view.record.hash)) for view in page]
    return web.json_response(_page_json("units", units, following))


async def get_unit(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    registry = request.app[REGISTRY_KEY]
    view = await _view(registry, name)
    if view is None:
        raise ApiError(404, "unit does not exist")
    return web.json_response(_unit_json(view, await registry.get_body(view.record.hash)))


async def _view(registry: Registry, name: str) -> UnitView | None:
    return await unit_view(registry, name)


async def delete_unit(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    registry = request.app[REGISTRY_KEY]
    if await registry.get_unit(name) is None:
        raise ApiError(404, "unit does not exist")
    await registry.destroy_units([name])
    return web.Response(status=204)


async def put_unit(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_types = request.headers.getall("Content-Type", [])
    if len(content_types) != 1:
        raise ApiError(415, f"expected 1 Content-Type, got {len(content_types)}")
    if content_types[0].split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "only acceptable Content-Type is application/json")
    body_name, options, desired = _decode_unit(await request.read())
    if body_name and body_name != name:
        raise ApiError(400, f'name in URL "{name}" differs from unit name in request body "{body_name}"')
    try:
        validate_unit_name(name)
    except UnitNameError as exc:
        raise ApiError(400, str(exc)) from None
    info = UnitNameInfo.parse(name)
    if info is not None and info.is_template and desired not in (None, TargetState.INACTIVE):
        raise ApiError(400, f'cannot activate template "{name}"')
    registry = request.app[REGISTRY_KEY]
    existing = await registry.get_unit(name)
    if existing is None and options is None:
        raise ApiError(409, "unit does not exist and options field empty")
    if options is not None:
        unit_file = _checked(options)
        if existing is None or existing.hash != unit_file.hash:
            await registry.ensure_schema()
            await registry.put_units([new_record(name, unit_file, desired or TargetState.INACTIVE)])
            return web.Response(status=201)
    if desired is None:
        raise ApiError(409, "must provide DesiredState to update existing unit")
    await registry.set_target_states({name: desired})
    return web.Response(status=204)


def _decode_unit(data: bytes) -> tuple[str, list[tuple[str, str, str]] | None, TargetState | None]:
    """(name, options or None when empty, desired state or None) of a request body."""
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        name = obj.get("name") or ""
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        options = [_option(item) for item in obj.get("options") or []]
    except (ValueError, TypeError, AttributeError) as exc:
        raise ApiError(400, f"unable to decode body: {exc}") from None
    desired: TargetState | None = None
    text = obj.get("desiredState") or ""
    if text:
        try:
            desired = TargetState.parse(str(text))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    return name, options or None, desired


def _option(item: Mapping[str, Any]) -> tuple[str, str, str]:
    values = tuple(item.get(key, "") for key in ("section", "name", "value"))
    if not all(isinstance(value, str) for value in values):
        raise ValueError("option section, name and value must be strings")
    section, name, value = values
    return section, name, value


def _checked(options: list[tuple[str, str, str]]) -> UnitFile:
    """The usable unit file of ``options``: the body policy fleetctl applies to a unit file."""
    try:
        return checked_unit_file(UnitFile.from_options(options).canonical)
    except UnitFileError as exc:
        raise ApiError(400, f"invalid unit options: {exc}") from None


async def list_states(request: web.Request) -> web.Response:
    token = _token(request)
    registry = request.app[REGISTRY_KEY]
    unit_name = request.query.get("unitName", "")
    machine_id = request.query.get("machineID", "")
    if unit_name:
        states = await registry.list_unit_states([unit_name])
    else:
        states = await request.app[LISTINGS_KEY].get("states", registry.list_unit_states)
    if machine_id:
        states = tuple(state for state in states if state.machine_id == machine_id)
    page, following = page_of(states, token)
    return web.json_response(_page_json("states", [_state_json(state) for state in page], following))


async def get_state(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    states = await request.app[REGISTRY_KEY].list_unit_states([name])
    if not states:
        raise ApiError(404, "unit state does not exist")
    return web.json_response(_state_json(states[0]))


async def list_machines(request: web.Request) -> web.Response:
    token = _token(request)
    machines = sorted(await request.app[REGISTRY_KEY].list_machines(), key=lambda machine: machine.id)
    page, following = page_of(machines, token)
    return web.json_response(_page_json("machines", [_machine_json(m) for m in page], following))


async def patch_machines(request: web.Request) -> web.Response:
    """Live metadata: a JSON Patch of ``/<machine-id>/metadata/<key>`` paths (fleet's ``PATCH /machines``),
    or of ``/metadata/<key>`` paths on ``/machines/<id>`` (404 for a machine neither live nor with live
    metadata). Checked whole before anything is written; 204."""
    machine_id = request.match_info.get("id")
    try:
        changes = parse_patch(json.loads(await request.read()), machine_id)
    except PatchError as exc:
        raise ApiError(400, str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"unable to decode body: {exc}") from None
    registry = request.app[REGISTRY_KEY]
    if machine_id is not None:
        await _known_machine(registry, machine_id)
    await registry.patch_metadata(changes)
    return web.Response(status=204)


async def _known_machine(registry: Registry, machine_id: str) -> None:
    """ApiError 404 unless the machine is live or has live metadata."""
    keys = registry.keys
    if not await registry.get_many([keys.machine(machine_id), keys.machine_metadata(machine_id)]):
        raise ApiError(404, "machine does not exist")


async def reset_metadata(request: web.Request) -> web.Response:
    """Drop live metadata, so the machine's configured values hold again: one key
    (``DELETE machines/<id>/metadata/<key>``) or every override (``DELETE machines/<id>/metadata``).
    204; 404 for a machine neither live nor with live metadata."""
    machine_id = request.match_info["id"]
    key = request.match_info.get("key")
    problem = check_machine_id(machine_id) or (check_key(key) if key is not None else None)
    if problem is not None:
        raise ApiError(400, f"{INVALID_PATH}: {problem}")
    registry = request.app[REGISTRY_KEY]
    await _known_machine(registry, machine_id)
    await registry.reset_metadata(MachineID(machine_id), None if key is None else [key])
    return web.Response(status=204)


async def metrics_page(request: web.Request) -> web.Response:
    from fleetd.api import exposition  # noqa: PLC0415 - the exposition library loads at the first scrape

    response = web.Response(body=exposition.render())
    response.headers["Content-Type"] = exposition.CONTENT_TYPE
    return response


async def not_allowed(request: web.Request) -> web.Response:
    raise ApiError(405, "")


def make_app(
    registry: Registry, *, token_limit: int = 100, root: Callable[[web.Application], None] | None = None
) -> web.Application:
    """The API application on ``registry``; pages hold ``token_limit`` items. ``root`` registers what
    ``/`` serves (the dashboard's routes); without it ``/`` is not allowed."""
    app = web.Application(middlewares=[_errors])
    app[REGISTRY_KEY] = registry
    app[LISTINGS_KEY] = Listings(registry)
    app[LIMIT_KEY] = token_limit
    app.on_response_prepare.append(_server_header)
    app.router.add_get("/metrics", metrics_page)
    if root is not None:
        root(app)
    else:
        app.router.add_route("*", "/", not_allowed)
    for prefix in PREFIXES:
        app.router.add_route("*", prefix, not_allowed)
        app.router.add_get(f"{prefix}/discovery", discovery)
        app.router.add_get(f"{prefix}/units", list_units)
        app.router.add_get(f"{prefix}/units/{{name}}", get_unit)
        app.router.add_put(f"{prefix}/units/{{name}}", put_unit)
        app.router.add_delete(f"{prefix}/units/{{name}}", delete_unit)
        app.router.add_get(f"{prefix}/state", list_states)
        app.router.add_get(f"{prefix}/state/{{name}}", get_state)
        app.router.add_get(f"{prefix}/machines", list_machines)
        app.router.add_patch(f"{prefix}/machines", patch_machines)
        app.router.add_patch(f"{prefix}/machines/{{id}}", patch_machines)
        app.router.add_delete(f"{prefix}/machines/{{id}}/metadata", reset_metadata)
        app.router.add_delete(f"{prefix}/machines/{{id}}/metadata/{{key:.+}}", reset_metadata)
    return app
