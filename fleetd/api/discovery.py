"""The discovery document served at ``/fleet/v1/discovery``: fleet's v1 API described in the Google API
discovery format (schemas, and resources with their methods), so clients generated from it work unchanged."""

from __future__ import annotations

from typing import Any

__all__ = ["DOCUMENT"]


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _page(kind: str, item: str) -> dict[str, Any]:
    return {
        "id": f"{item}Page",
        "type": "object",
        "properties": {kind: {"type": "array", "items": {"$ref": item}}, "nextPageToken": _string()},
    }


_STATES = ["inactive", "loaded", "launched"]
_TOKEN = {"nextPageToken": _string(location="query")}
_UNIT_NAME = {"unitName": _string(location="path", required=True)}


def _method(ident: str, description: str, http: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"fleet.{ident}", "description": description, "httpMethod": http, "path": path, **extra}


def _item(ident: str, description: str, http: str, **extra: Any) -> dict[str, Any]:
    return _method(ident, description, http, "units/{unitName}", parameters=_UNIT_NAME,
                   parameterOrder=["unitName"], **extra)


DOCUMENT: dict[str, Any] = {
    "kind": "discovery#restDescription",
    "discoveryVersion": "v1",
    "id": "fleet:v1",
    "name": "schema",
    "version": "v1",
    "title": "fleet API",
    "description": "",
    "documentationLink": "http://github.com/coreos/fleet",
    "protocol": "rest",
    "icons": {"x16": "", "x32": ""},
    "labels": [],
    "baseUrl": "$ENDPOINT/fleet/v1/",
    "basePath": "/fleet/v1/",
    "rootUrl": "$ENDPOINT/",
    "servicePath": "fleet/v1/",
    "batchPath": "batch",
    "parameters": {},
    "auth": {},
    "schemas": {
        "Machine": {
            "id": "Machine",
            "type": "object",
            "properties": {
                "id": _string(),
                "primaryIP": _string(),
                "metadata": {"type": "object", "properties": {}, "additionalProperties": _string()},
            },
        },
        "MachinePage": _page("machines", "Machine"),
        "MetadataOperation": {
            "id": "MetadataOperation",
            "type": "object",
            "properties": {
                "op": _string(enum=["add", "remove", "replace"]),
                "path": _string(),
                "value": {"type": "object", "properties": {"value": _string()}},
            },
        },
        "MetadataPatch": {"id": "MetadataPatch", "type": "array", "items": {"$ref": "MetadataOperation"}},
        "UnitOption": {
            "id": "UnitOption",
            "type": "object",
            "properties": {"section": _string(), "name": _string(), "value": _string()},
        },
        "Unit": {
            "id": "Unit",
            "type": "object",
            "properties": {
                "name": _string(),
                "options": {"type": "array", "items": {"$ref": "UnitOption"}},
                "desiredState": _string(enum=_STATES),
                "currentState": _string(enum=_STATES),
                "machineID": _string(required=True),
            },
        },
        "UnitPage": _page("units", "Unit"),
        "UnitState": {
            "id": "UnitState",
            "type": "object",
            "properties": {
                name: _string()
                for name in ("name", "hash", "machineID", "systemdLoadState", "systemdActiveState",
                             "systemdSubState")
            },
        },
        "UnitStatePage": _page("states", "UnitState"),
    },
    "resources": {
        "Machines": {"methods": {
            "List": _method("Machine.List", "Retrieve a page of Machine objects.", "GET", "machines",
                            parameters=_TOKEN, response={"$ref": "MachinePage"}),
            "Patch": _method("Machine.Patch", "Change machines' metadata: paths /<machineID>/metadata/<key>.",
                             "PATCH", "machines", request={"$ref": "MetadataPatch"}),
            "PatchMachine": _method(
                "Machine.PatchMachine", "Change one machine's metadata: paths /metadata/<key>.", "PATCH",
                "machines/{machineID}", parameters={"machineID": _string(location="path", required=True)},
                parameterOrder=["machineID"], request={"$ref": "MetadataPatch"},
            ),
            "ResetMetadata": _method(
                "Machine.ResetMetadata", "Drop a machine's live metadata: its configured values hold again.",
                "DELETE", "machines/{machineID}/metadata",
                parameters={"machineID": _string(location="path", required=True)},
                parameterOrder=["machineID"],
            ),
            "ResetMetadataKey": _method(
                "Machine.ResetMetadataKey", "Drop one live metadata key: its configured value holds again.",
                "DELETE", "machines/{machineID}/metadata/{key}",
                parameters={"machineID": _string(location="path", required=True),
                            "key": _string(location="path", required=True)},
                parameterOrder=["machineID", "key"],
            ),
        }},
        "Units": {"methods": {
            "List": _method("Unit.List", "Retrieve a page of Unit objects.", "GET", "units",
                            parameters=_TOKEN, response={"$ref": "UnitPage"}),
            "Get": _item("Unit.Get", "Retrieve a single Unit object.", "GET", response={"$ref": "Unit"}),
            "Delete": _item("Unit.Delete", "Delete the referenced Unit object.", "DELETE"),
            "Set": _item("Unit.Set", "Create or update a Unit.", "PUT", request={"$ref": "Unit"}),
        }},
        "UnitState": {"methods": {
            "List": _method(
                "UnitState.List", "Retrieve a page of UnitState objects.", "GET", "state",
                parameters={**_TOKEN, "unitName": _string(location="query"),
                            "machineID": _string(location="query")},
                response={"$ref": "UnitStatePage"},
            ),
        }},
    },
}
