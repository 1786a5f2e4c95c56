"""Live machine metadata (pure): the rules for keys and values, overrides merged over a machine's configured
metadata, and the JSON Patch documents that change them.

A machine's configured metadata (fleet.conf ``metadata``) is published by its agent in ``machines/<id>``; live
metadata, set with ``fleetctl set-metadata`` or ``PATCH /fleet/v1/machines``, is stored apart, in
``metadata/<id>`` (see docs/registry.md), as overrides: ``key -> value``, where the empty value means
"removed" (it hides a configured key); dropping an override (``fleetctl reset-metadata``) brings back the
configured value. A restarting agent rewrites only its own record, so overrides
outlive it; every reader of machines (the engine's snapshot, list-machines, the API) sees ``merged``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.model import MachineID, MachineState

__all__ = [
    "REMOVED",
    "RESERVED_KEYS",
    "RESET",
    "MetadataChange",
    "PatchError",
    "applied",
    "check_key",
    "check_machine_id",
    "check_value",
    "merged",
    "parse_patch",
]

REMOVED = ""  # an override with this value hides the configured key
MAX_KEY_LENGTH = 253
MAX_VALUE_LENGTH = 1024
# The unit cap is part of the agent's record (max_units), set from fleet.conf: not a live setting.
RESERVED_KEYS = frozenset({"fleet.max-units"})

# fleet's messages for a bad PATCH document
INVALID_OP = "invalid op: expect add, remove, or replace"
INVALID_PATH = "machine metadata path invalid"
INVALID_VALUE = "invalid value: add and replace require a value"

_FLEET_PATH = re.compile(r"/([^/]+)/metadata/([^/]+)")  # PATCH /machines: /<machine-id>/metadata/<key>
_MACHINE_PATH = re.compile(r"/metadata/([^/]+)")  # PATCH /machines/<id>: /metadata/<key>
_MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")


class PatchError(ValueError):
    """A metadata change that is not valid; the message says what and why (one line)."""


def check_key(key: str) -> str | None:
    """Why ``key`` is not a metadata key (None when it is): the rules of fleet.conf's ``k=v,k2=v2``, so
    every key set live could also be configured: not empty, no ``=`` or ``,``, no surrounding whitespace,
    printable, at most 253 characters."""
    if not key:
        return "a metadata key must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"metadata key is longer than {MAX_KEY_LENGTH} characters"
    if "=" in key or "," in key or key != key.strip() or not key.isprintable():
        return f"metadata key {key!r} must not contain '=', ',', control characters or surrounding spaces"
    if key in RESERVED_KEYS:
        return f"metadata key {key} is the machine's unit cap: set it in its fleet.conf (max_units)"
    return None


def check_machine_id(machine_id: str) -> str | None:
    """Why ``machine_id`` cannot name a machine in a metadata path (None when it can)."""
    if _MACHINE_ID.fullmatch(machine_id) is None:
        return f"{machine_id!r} is not a machine ID"
    return None


def check_value(value: str) -> str | None:
    """Why ``value`` cannot be set live (None when it can): not empty (remove the key instead), no ``,``,
    no surrounding whitespace, printable, at most 1024 characters."""
    if not value:
        return "a metadata value must not be empty (to remove a key, unset it)"
    if len(value) > MAX_VALUE_LENGTH:
        return f"metadata value is longer than {MAX_VALUE_LENGTH} characters"
    if "," in value or value != value.strip() or not value.isprintable():
        return f"metadata value {value!r} must not contain ',', control characters or surrounding spaces"
    return None


def merged(machine: MachineState, overrides: Mapping[str, str]) -> MachineState:
    """``machine`` with live ``overrides`` applied over its configured metadata."""
    if not overrides:
        return machine
    metadata = dict(machine.metadata)
    for key, value in overrides.items():
        if value == REMOVED:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return dataclasses.replace(machine, metadata=metadata)


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """Set ``key`` to ``value`` on a machine; ``value`` REMOVED removes it (hiding a configured key) and
    RESET drops the override (the configured value, if any, holds again)."""

    machine_id: MachineID
    key: str
    value: str | None


RESET = None  # a MetadataChange value: drop the override of that key


def applied(overrides: Mapping[str, str], changes: Iterable[MetadataChange]) -> dict[str, str]:
    """``overrides`` after ``changes`` (all of one machine), in order."""
    out = dict(overrides)
    for change in changes:
        if change.value is RESET:
            out.pop(change.key, None)
        else:
            out[change.key] = change.value
    return out


def _unescape(token: str) -> str:
    """An RFC 6901 reference token: ``~1`` is ``/`` and ``~0`` is ``~``."""
    return token.replace("~1", "/").replace("~0", "~")


def _value(op: Mapping[str, Any]) -> str:
    """An add/replace value: a string, or fleet's ``{"value": "<v>"}``."""
    value = op.get("value")
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, str) or not value:
        raise PatchError(INVALID_VALUE)
    return value


def parse_patch(document: object, machine_id: str | None = None) -> list[MetadataChange]:
    """The changes of a JSON Patch (RFC 6902: a list of ``{"op","path","value"}``; ops ``add``, ``replace``,
    ``remove``). With ``machine_id`` paths are ``/metadata/<key>`` (``PATCH /machines/<id>``), else fleet's
    ``/<machine-id>/metadata/<key>`` (``PATCH /machines``). The whole document is checked before anything
    is applied; PatchError names the first problem."""
    if not isinstance(document, list):
        raise PatchError("a metadata patch must be a JSON array of operations")
    changes: list[MetadataChange] = []
    for op in document:
        if not isinstance(op, dict):
            raise PatchError("each patch operation must be a JSON object")
        kind = op.get("op")
        if kind not in ("add", "replace", "remove"):
            raise PatchError(INVALID_OP)
        path = op.get("path")
        found = None
        if isinstance(path, str):
            found = (_MACHINE_PATH if machine_id is not None else _FLEET_PATH).fullmatch(path)
        if found is None:
            raise PatchError(INVALID_PATH)
        target = machine_id if machine_id is not None else found.group(1)
        if (problem := check_machine_id(target)) is not None:
            raise PatchError(f"{INVALID_PATH}: {problem}")
        key = _unescape(found.group(found.lastindex or 1))
        problem = check_key(key)
        if problem is not None:
            raise PatchError(f"{INVALID_PATH}: {problem}")
        value = REMOVED if kind == "remove" else _value(op)
        if value != REMOVED and (problem := check_value(value)) is not None:
            raise PatchError(f"invalid value: {problem}")
        changes.append(MetadataChange(MachineID(target), key, value))
    return changes
