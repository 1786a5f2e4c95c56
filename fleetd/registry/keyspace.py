"""The etcd keyspace (pure): where every record lives and how its value is encoded.

docs/registry.md documents the layout key by key; this module is its single implementation. Decoding never
trusts stored data: a malformed value raises ``BadRecord`` naming the key and what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.errors import RegistryError
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.snapshot import ScheduledUnit

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "BadRecord",
    "GlobalEntry",
    "Keyspace",
    "UnitRecord",
    "decode_global",
    "decode_machine",
    "decode_schedule",
    "decode_target",
    "decode_unit",
    "decode_unit_state",
    "encode_global",
    "encode_machine",
    "encode_schedule",
    "encode_unit",
    "encode_unit_state",
]

DEFAULT_PREFIX = "/_coreos.com/fleet/"
SCHEMA_VERSION = "1"

_HEX = frozenset("0123456789abcdef")
_SCHEDULED_STATES = (TargetState.LOADED, TargetState.LAUNCHED)
_SCHEDULED_BY_TEXT = {state.value: state for state in _SCHEDULED_STATES}
_loads = json.loads


class BadRecord(RegistryError):
    """A stored value (or key) that does not decode: the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"bad record at {key}: {problem}")


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """A unit as stored under ``units/`` and ``targets/``: its body hash, globalness and target state."""

    name: UnitName
    hash: str
    is_global: bool
    target_state: TargetState


@dataclass(frozen=True, slots=True)
class GlobalEntry:
    """``globals/<name>``: a global unit every agent may run, at this hash, in this target state."""

    name: UnitName
    hash: str
    state: TargetState


class Keyspace:
    """Key names under one prefix. Prefix keys end with ``/`` so a range never matches a sibling."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    # Whole-record prefixes (watch/range these).
    @property
    def machines(self) -> str:
        return self.prefix + "machines/"

    @property
    def bodies(self) -> str:
        return self.prefix + "bodies/"

    @property
    def units(self) -> str:
        return self.prefix + "units/"

    @property
    def targets(self) -> str:
        return self.prefix + "targets/"

    @property
    def globals(self) -> str:
        return self.prefix + "globals/"

    @property
    def schedules(self) -> str:
        return self.prefix + "schedule/"

    @property
    def states(self) -> str:
        return self.prefix + "states/"

    # Single keys.
    @property
    def schema(self) -> str:
        return self.prefix + "schema"

    @property
    def leader(self) -> str:
        return self.prefix + "engine/leader"

    def machine(self, machine_id: str) -> str:
        return self.machines + machine_id

    def body(self, unit_hash: str) -> str:
        return self.bodies + unit_hash

    def unit(self, name: str) -> str:
        return self.units + name

    def target(self, name: str) -> str:
        return self.targets + name

    def global_unit(self, name: str) -> str:
        return self.globals + name

    def schedule(self, machine_id: str) -> str:
        """The prefix of one machine's schedule: the only thing that machine's agent watches."""
        return self.schedules + machine_id + "/"

    def scheduled(self, machine_id: str, name: str) -> str:
        return self.schedule(machine_id) + name

    def unit_states(self, name: str) -> str:
        return self.states + name + "/"

    def unit_state(self, name: str, machine_id: str) -> str:
        return self.unit_states(name) + machine_id

    # Key parsing.
    def leaf(self, key: str, prefix: str) -> str:
        """The part of ``key`` after ``prefix`` (one path segment); BadRecord when it is not one."""
        if not key.startswith(prefix) or len(key) == len(prefix) or "/" in key[len(prefix) :]:
            raise BadRecord(key, f"not a key directly under {prefix}")
        return key[len(prefix) :]

    def pair(self, key: str, prefix: str) -> tuple[str, str]:
        """``prefix<a>/<b>`` -> (a, b); BadRecord otherwise."""
        rest = key[len(prefix) :] if key.startswith(prefix) else ""
        first, sep, second = rest.partition("/")
        if not sep or not first or not second or "/" in second:
            raise BadRecord(key, f"expected {prefix}<a>/<b>")
        return first, second

    def parse_scheduled(self, key: str) -> tuple[MachineID, UnitName]:
        machine_id, name = self.pair(key, self.schedules)
        return MachineID(machine_id), UnitName(name)

    def parse_unit_state(self, key: str) -> tuple[UnitName, MachineID]:
        name, machine_id = self.pair(key, self.states)
        return UnitName(name), MachineID(machine_id)


# Value encoding. JSON is compact with sorted keys so equal records encode to equal text.


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _object(key: str, text: str) -> Mapping[str, object]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecord(key, f"malformed JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise BadRecord(key, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _str(key: str, obj: Mapping[str, object], field: str, *, default: str | None = None) -> str:
    value = obj.get(field, default)
    if not isinstance(value, str):
        raise BadRecord(key, f"field {field!r} must be a string")
    return value


def _hash(key: str, obj: Mapping[str, object]) -> str:
    value = _str(key, obj, "hash")
    if len(value) != 40 or not _HEX.issuperset(value):
        raise BadRecord(key, f"field 'hash' is not 40 lowercase hex digits: {value!r}")
    return value


def _state(key: str, text: str, allowed: tuple[TargetState, ...] = tuple(TargetState)) -> TargetState:
    try:
        state = TargetState.parse(text)
    except ValueError as exc:
        raise BadRecord(key, str(exc)) from None
    if state not in allowed:
        raise BadRecord(key, f"state {text!r} not allowed here")
    return state


def encode_machine(state: MachineState) -> str:
    return _dumps(
        {
            "id": state.id,
            "public_ip": state.public_ip,
            "metadata": dict(state.metadata),
            "version": state.version,
        }
    )


def decode_machine(key: str, text: str) -> MachineState:
    obj = _object(key, text)
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BadRecord(key, "field 'metadata' must map strings to strings")
    machine_id = _str(key, obj, "id")
    if not machine_id or "/" in machine_id:
        raise BadRecord(key, f"invalid machine id {machine_id!r}")
    return MachineState(
        id=MachineID(machine_id),
        public_ip=_str(key, obj, "public_ip", default=""),
        metadata=dict(metadata),
        version=_str(key, obj, "version", default=""),
    )


def encode_unit(record: UnitRecord) -> str:
    """The ``units/<name>`` value; the target state lives in its own key (``targets/<name>``)."""
    return _dumps({"hash": record.hash, "global": record.is_global})


def decode_unit(key: str, text: str, name: UnitName, target: TargetState) -> UnitRecord:
    obj = _object(key, text)
    is_global = obj.get("global", False)
    if not isinstance(is_global, bool):
        raise BadRecord(key, "field 'global' must be true or false")
    return UnitRecord(name=name, hash=_hash(key, obj), is_global=is_global, target_state=target)


def decode_target(key: str, text: str) -> TargetState:
    return _state(key, text)


def encode_global(record: UnitRecord) -> str:
    return _dumps({"hash": record.hash, "state": record.target_state.value})


def decode_global(key: str, text: str, name: UnitName) -> GlobalEntry:
    obj = _object(key, text)
    return GlobalEntry(name=name, hash=_hash(key, obj), state=_state(key, _str(key, obj, "state")))


def encode_schedule(unit_hash: str, state: TargetState) -> str:
    if state not in _SCHEDULED_STATES:
        raise ValueError(f"cannot schedule a unit in state {state.value}")
    return _dumps({"hash": unit_hash, "state": state.value})


def decode_schedule(key: str, text: str, machine_id: MachineID) -> ScheduledUnit:
    obj = _object(key, text)
    state = _state(key, _str(key, obj, "state"), _SCHEDULED_STATES)
    return ScheduledUnit(machine_id=machine_id, hash=_hash(key, obj), state=state)


def encode_unit_state(state: UnitState) -> str:
    return _dumps(
        {
            "load": state.load_state,
            "active": state.active_state,
            "sub": state.sub_state,
            "hash": state.hash,
            "state": state.state.value,
        }
    )


def decode_unit_state(key: str, text: str, name: UnitName, machine_id: MachineID) -> UnitState:
    # The hot path of list-units: one json.loads and exact-type checks (json only makes exact dicts and
    # strs). Anything unusual goes through the field-by-field validation, which names the problem.
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecord(key, f"malformed JSON ({exc.msg})") from None
    if type(obj) is dict:
        load, active, sub, hash_ = obj.get("load"), obj.get("active"), obj.get("sub"), obj.get("hash")
        text_state = obj.get("state", "loaded")
        if (
            type(load) is str
            and type(active) is str
            and type(sub) is str
            and type(hash_) is str
            and type(text_state) is str
        ):
            state = _SCHEDULED_BY_TEXT.get(text_state)
            if state is not None:
                return UnitState(name, machine_id, load, active, sub, hash_, state)
    return _checked_unit_state(key, text, name, machine_id)


def _checked_unit_state(key: str, text: str, name: UnitName, machine_id: MachineID) -> UnitState:
    obj = _object(key, text)
    return UnitState(
        name=name,
        machine_id=machine_id,
        load_state=_str(key, obj, "load"),
        active_state=_str(key, obj, "active"),
        sub_state=_str(key, obj, "sub"),
        hash=_str(key, obj, "hash"),
        state=_state(key, _str(key, obj, "state", default="loaded"), _SCHEDULED_STATES),
    )
