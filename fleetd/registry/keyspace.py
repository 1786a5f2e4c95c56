"""The etcd keyspace (pure): where every record lives and how its value is encoded.

docs/registry.md documents the layout key by key; this module is its single implementation. Decoding never
trusts stored data (anyone with etcd access can write any bytes under any key): every ``decode_*`` function
and every key parser is total, raising ``BadRecord`` naming the key and the problem and nothing else, for any
input: any JSON shape or depth, huge numbers, lone surrogates (how EtcdKV hands over bytes that are not
UTF-8), names that are not valid unit names or machine IDs. ``ReportOnce`` is the one rule for reporting
them: once per (key, mod revision).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from fleetd.errors import RegistryError, UnitNameError
from fleetd.metadata import REMOVED, check_key, check_value
from fleetd.model import MAX_UNITS_LIMIT, MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.snapshot import ScheduledUnit
from fleetd.unitfile.names import MAX_NAME_LENGTH, TEMPLATE_TYPES, UNIT_TYPES, validate_unit_name

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "BadRecord",
    "Cordon",
    "GlobalEntry",
    "Keyspace",
    "ReportOnce",
    "UnitRecord",
    "Unplaceable",
    "check_machine_id",
    "check_unit_name",
    "decode_body",
    "decode_cordon",
    "decode_global",
    "decode_machine",
    "decode_metadata",
    "decode_pin",
    "decode_schedule",
    "decode_target",
    "decode_unit",
    "decode_unit_state",
    "decode_unplaceable",
    "encode_cordon",
    "encode_global",
    "encode_machine",
    "encode_metadata",
    "encode_pin",
    "encode_schedule",
    "encode_unit",
    "encode_unit_state",
    "encode_unplaceable",
    "unit_state_decoder",
]

DEFAULT_PREFIX = "/_coreos.com/fleet/"
SCHEMA_VERSION = "1"

_HEX = frozenset("0123456789abcdef")
_SCHEDULED_STATES = (TargetState.LOADED, TargetState.LAUNCHED)
_SCHEDULED_BY_TEXT = {state.value: state for state in _SCHEDULED_STATES}
_loads = json.loads
# A machine ID (normally the 32 hex digits of /etc/machine-id): one key segment of a few safe characters.
_MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")
PIN_SEGMENT = "pin/"  # schedule/<machine-id>/pin/<unit>: a Global unit's hash pin on that machine
_SHOWN = 120  # characters of a stored key or value quoted in a message

_P = ParamSpec("_P")
_R = TypeVar("_R")


def show(text: str) -> str:
    """``text`` fit for a log line: printable and short (hostile keys and values are neither)."""
    if len(text) <= _SHOWN and text.isprintable():
        return text
    quoted = ascii(text[:_SHOWN])
    return quoted if len(text) <= _SHOWN else f"{quoted}... ({len(text)} characters)"


class BadRecord(RegistryError):
    """A stored value (or key) that does not decode: the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"bad record at {show(key)}: {problem}")


class ReportOnce:
    """Remembers which bad records were reported: each (key, mod revision) once, so a record left in place
    is reported once, not on every pass, and reported again when it is rewritten."""

    __slots__ = ("_seen",)
    _LIMIT = 10_000  # keys remembered; past it, start over (each key is then reported once more at most)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def first(self, key: str, mod_revision: int) -> bool:
        """True the first time this key is seen bad at this mod revision."""
        if self._seen.get(key) == mod_revision:
            return False
        if len(self._seen) >= self._LIMIT:
            self._seen.clear()
        self._seen[key] = mod_revision
        return True


def _total(
    decode: Callable[Concatenate[str, _P], _R],
) -> Callable[Concatenate[str, _P], _R]:
    """Make a decoder (first argument: the key) total: whatever it raises becomes BadRecord.

    The checks in the decoders name the usual problems; this is the guarantee for the rest (a nesting too
    deep to parse, a number too long to convert, a value no check foresaw)."""

    @functools.wraps(decode)
    def total(key: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return decode(key, *args, **kwargs)
        except BadRecord:
            raise
        except RecursionError:
            raise BadRecord(key, "value nested too deeply") from None
        except Exception as exc:  # any input must end here, never in the caller: see the module docstring
            problem = f"{type(exc).__name__}: {show(str(exc))}"
            raise BadRecord(key, f"value cannot be decoded ({problem})") from None

    return total


def _text(key: str, value: str, what: str) -> str:
    """``value`` when it is valid UTF-8 text (no lone surrogates: bytes that were not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(key, f"{what} is not valid UTF-8") from None
    return value


@_total
def check_unit_name(key: str, name: str) -> UnitName:
    """``name`` (taken from ``key``) as a UnitName; BadRecord unless it is a valid unit name."""
    try:
        validate_unit_name(name)
    except UnitNameError as exc:
        raise BadRecord(key, f"invalid unit name {show(name)}: {show(str(exc))}") from None
    return UnitName(name)


@_total
def check_machine_id(key: str, machine_id: str) -> MachineID:
    """``machine_id`` (taken from ``key`` or its value) as a MachineID; BadRecord unless it is one key
    segment of letters, digits and ``_.:-``, at most 255 characters, not starting with a dot or dash."""
    if _MACHINE_ID.fullmatch(machine_id) is None:
        raise BadRecord(key, f"invalid machine id {show(machine_id)}")
    return MachineID(machine_id)


def _check_hash(key: str, value: str, what: str) -> str:
    if len(value) != 40 or not _HEX.issuperset(value):
        raise BadRecord(key, f"{what} is not 40 lowercase hex digits: {show(value)}")
    return value


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
    def unplaceable(self) -> str:
        """``unplaceable/<unit>``: why the engine found no machine for a unit (written by the leader)."""
        return self.prefix + "unplaceable/"

    def unplaceable_unit(self, name: str) -> str:
        return self.unplaceable + name

    @property
    def cordons(self) -> str:
        """``cordons/<machine-id>``: machines the engine places nothing new on and drains (fleetctl drain)."""
        return self.prefix + "cordons/"

    def cordon(self, machine_id: str) -> str:
        return self.cordons + machine_id

    @property
    def metadata(self) -> str:
        """``metadata/<machine-id>``: live metadata overrides (fleetctl set-metadata, PATCH /machines)."""
        return self.prefix + "metadata/"

    def machine_metadata(self, machine_id: str) -> str:
        return self.metadata + machine_id

    @property
    def states(self) -> str:
        return self.prefix + "states/"

    @property
    def failed(self) -> str:
        """``failed/<unit>/<machine>``: systemd reports the unit failed there (the agent's, on its lease)."""
        return self.prefix + "failed/"

    def failed_unit(self, name: str, machine_id: str) -> str:
        return self.failed + name + "/" + machine_id

    def parse_failed(self, key: str) -> tuple[UnitName, MachineID]:
        name, machine_id = self.pair(key, self.failed)
        return check_unit_name(key, name), check_machine_id(key, machine_id)

    @property
    def reschedules(self) -> str:
        """``reschedules/<unit>``: the engine's count of moves of a failed unit (Reschedule=on-failure)."""
        return self.prefix + "reschedules/"

    def rescheduled_unit(self, name: str) -> str:
        return self.reschedules + name

    @property
    def rollouts(self) -> str:
        """``rollouts/<name>``: a rolling update's progress (fleetctl rolling-update), by template or unit."""
        return self.prefix + "rollouts/"

    def rollout(self, name: str) -> str:
        return self.rollouts + name

    def rollout_name(self, key: str) -> UnitName:
        """The template or unit name of a ``rollouts/<name>`` key."""
        return self.unit_name(key, self.rollouts)

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

    def pins(self, machine_id: str) -> str:
        """``schedule/<machine-id>/pin/``: the machine's hash pins (under the prefix its agent watches)."""
        return self.schedule(machine_id) + PIN_SEGMENT

    def pin(self, machine_id: str, name: str) -> str:
        """``schedule/<machine-id>/pin/<unit>``: the Global unit runs at the pinned hash on this machine."""
        return self.pins(machine_id) + name

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

    def unit_name(self, key: str, prefix: str) -> UnitName:
        """The valid unit name directly under ``prefix`` (``units/``, ``targets/``, ``globals/``...)."""
        return check_unit_name(key, self.leaf(key, prefix))

    def machine_id(self, key: str) -> MachineID:
        """The valid machine ID of a ``machines/<id>`` key."""
        return check_machine_id(key, self.leaf(key, self.machines))

    def cordoned_machine(self, key: str) -> MachineID:
        """The valid machine ID of a ``cordons/<id>`` key."""
        return check_machine_id(key, self.leaf(key, self.cordons))

    def metadata_machine(self, key: str) -> MachineID:
        """The valid machine ID of a ``metadata/<id>`` key."""
        return check_machine_id(key, self.leaf(key, self.metadata))

    def body_hash(self, key: str) -> str:
        """The 40-hex hash of a ``bodies/<hash>`` key."""
        return _check_hash(key, self.leaf(key, self.bodies), "body key")

    def parse_scheduled(self, key: str) -> tuple[MachineID, UnitName]:
        machine_id, name = self.pair(key, self.schedules)
        return check_machine_id(key, machine_id), check_unit_name(key, name)

    def is_pin(self, key: str) -> bool:
        """Whether ``key`` is under some machine's ``schedule/<id>/pin/`` (a pin, not a schedule entry: a
        unit name has no ``/``, so no entry is ever mistaken for one)."""
        if not key.startswith(self.schedules):
            return False
        _, sep, rest = key[len(self.schedules) :].partition("/")
        return bool(sep) and rest.startswith(PIN_SEGMENT)

    def parse_pin(self, key: str) -> tuple[MachineID, UnitName]:
        """The machine and unit of a ``schedule/<id>/pin/<unit>`` key; BadRecord otherwise."""
        if not self.is_pin(key):
            raise BadRecord(key, f"expected {self.schedules}<machine-id>/{PIN_SEGMENT}<unit>")
        machine_id = key[len(self.schedules) :].partition("/")[0]
        name = self.leaf(key, self.pins(machine_id))
        return check_machine_id(key, machine_id), check_unit_name(key, name)

    def parse_unit_state(self, key: str) -> tuple[UnitName, MachineID]:
        name, machine_id = self.pair(key, self.states)
        return check_unit_name(key, name), check_machine_id(key, machine_id)


# Value encoding. JSON is compact with sorted keys so equal records encode to equal text.


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _json(key: str, text: str) -> object:
    """The one JSON loader for stored values (the decoders it serves are ``_total``)."""
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecord(key, f"malformed JSON ({exc.msg})") from None
    except RecursionError:
        raise BadRecord(key, "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise BadRecord(key, f"malformed JSON ({show(str(exc))})") from None


def _object(key: str, text: str) -> Mapping[str, object]:
    obj = _json(key, text)
    if not isinstance(obj, dict):
        raise BadRecord(key, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _str(key: str, obj: Mapping[str, object], field: str, *, default: str | None = None) -> str:
    value = obj.get(field, default)
    if not isinstance(value, str):
        raise BadRecord(key, f"field {field!r} must be a string")
    return _text(key, value, f"field {field!r}")


def _hash(key: str, obj: Mapping[str, object]) -> str:
    return _check_hash(key, _str(key, obj, "hash"), "field 'hash'")


def _state(key: str, text: str, allowed: tuple[TargetState, ...] = tuple(TargetState)) -> TargetState:
    try:
        state = TargetState.parse(text)
    except ValueError as exc:
        raise BadRecord(key, show(str(exc))) from None
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
            **({"max_units": state.max_units} if state.max_units else {}),
        }
    )


@_total
def decode_machine(key: str, text: str) -> MachineState:
    obj = _object(key, text)
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BadRecord(key, "field 'metadata' must map strings to strings")
    for k, v in metadata.items():
        _text(key, k + v, "field 'metadata'")
    max_units = obj.get("max_units", 0)
    if type(max_units) is not int or not 0 <= max_units <= MAX_UNITS_LIMIT:
        raise BadRecord(key, f"field 'max_units' must be a whole number from 0 to {MAX_UNITS_LIMIT}")
    return MachineState(
        id=check_machine_id(key, _str(key, obj, "id")),
        public_ip=_str(key, obj, "public_ip", default=""),
        metadata=dict(metadata),
        version=_str(key, obj, "version", default=""),
        max_units=max_units,
    )


def encode_metadata(overrides: Mapping[str, str]) -> str:
    """The ``metadata/<id>`` value: ``{"overrides": {key: value}}``, '' hiding a configured key."""
    return _dumps({"overrides": dict(overrides)})


@_total
def decode_metadata(key: str, text: str) -> dict[str, str]:
    """Live metadata overrides; BadRecord unless every key and value follows ``fleetd.metadata``'s rules."""
    obj = _object(key, text)
    overrides = obj.get("overrides")
    if not isinstance(overrides, dict):
        raise BadRecord(key, "field 'overrides' must be a JSON object")
    for name, value in overrides.items():
        if not isinstance(value, str):
            raise BadRecord(key, f"override {show(str(name))} must be a string")
        _text(key, name + value, "field 'overrides'")
        problem = check_key(name) or (None if value == REMOVED else check_value(value))
        if problem is not None:
            raise BadRecord(key, show(problem))
    return dict(overrides)


def encode_unit(record: UnitRecord) -> str:
    """The ``units/<name>`` value; the target state lives in its own key (``targets/<name>``)."""
    return _dumps({"hash": record.hash, "global": record.is_global})


# The units/ and schedule/ values as fleet writes them (compact, sorted keys, a valid hash): one regular
# expression instead of a JSON parse and field checks (a new leader decodes 100,000s of them); anything
# else is decoded and checked the long way, which gives the same record or names the problem.
_CANONICAL_UNIT = re.compile(r'\{"global":(true|false),"hash":"([0-9a-f]{40})"\}').fullmatch
_CANONICAL_SCHEDULE = re.compile(r'\{"hash":"([0-9a-f]{40})","state":"(launched|loaded)"\}').fullmatch


@_total
def decode_unit(key: str, text: str, name: UnitName, target: TargetState) -> UnitRecord:
    fast = _CANONICAL_UNIT(text)
    if fast is not None:
        return UnitRecord(name=name, hash=fast[2], is_global=fast[1] == "true", target_state=target)
    obj = _object(key, text)
    is_global = obj.get("global", False)
    if not isinstance(is_global, bool):
        raise BadRecord(key, "field 'global' must be true or false")
    return UnitRecord(name=name, hash=_hash(key, obj), is_global=is_global, target_state=target)


@_total
def decode_target(key: str, text: str) -> TargetState:
    return _state(key, text)


@_total
def decode_body(key: str, text: str) -> str:
    """A unit body as text: BadRecord unless it is valid UTF-8 (whether it is a usable unit file is
    ``fleetd.unitfile.body``'s policy, applied by the engine and the agent)."""
    return _text(key, text, "unit body")


def encode_global(record: UnitRecord) -> str:
    return _dumps({"hash": record.hash, "state": record.target_state.value})


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """``unplaceable/<name>``: no machine can run the unit at this hash, and why."""

    hash: str
    reason: str


def encode_unplaceable(entry: Unplaceable) -> str:
    return _dumps({"hash": entry.hash, "reason": entry.reason})


@_total
def decode_unplaceable(key: str, text: str) -> Unplaceable:
    obj = _object(key, text)
    return Unplaceable(hash=_hash(key, obj), reason=_str(key, obj, "reason"))


@dataclass(frozen=True, slots=True)
class Cordon:
    """``cordons/<machine-id>``: the machine is unschedulable; ``reason`` is the operator's note."""

    reason: str = ""


def encode_cordon(cordon: Cordon) -> str:
    return _dumps({"reason": cordon.reason})


@_total
def decode_cordon(key: str, text: str) -> Cordon:
    obj = _object(key, text)
    return Cordon(reason=_str(key, obj, "reason"))


@_total
def decode_global(key: str, text: str, name: UnitName) -> GlobalEntry:
    obj = _object(key, text)
    return GlobalEntry(name=name, hash=_hash(key, obj), state=_state(key, _str(key, obj, "state")))


def encode_schedule(unit_hash: str, state: TargetState) -> str:
    if state not in _SCHEDULED_STATES:
        raise ValueError(f"cannot schedule a unit in state {state.value}")
    return _dumps({"hash": unit_hash, "state": state.value})


@_total
def decode_schedule(key: str, text: str, machine_id: MachineID) -> ScheduledUnit:
    fast = _CANONICAL_SCHEDULE(text)
    if fast is not None:
        return ScheduledUnit(machine_id=machine_id, hash=fast[1], state=_SCHEDULED_BY_TEXT[fast[2]])
    obj = _object(key, text)
    state = _state(key, _str(key, obj, "state"), _SCHEDULED_STATES)
    return ScheduledUnit(machine_id=machine_id, hash=_hash(key, obj), state=state)


def encode_pin(unit_hash: str) -> str:
    """The ``schedule/<machine-id>/pin/<unit>`` value: ``{"hash": ...}``."""
    return _dumps({"hash": unit_hash})


@_total
def decode_pin(key: str, text: str) -> str:
    """The pinned body hash; BadRecord unless the value is ``{"hash": <40 hex>}``."""
    return _hash(key, _object(key, text))


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


@_total
def decode_unit_state(key: str, text: str, name: UnitName, machine_id: MachineID) -> UnitState:
    # The hot path of list-units: one json.loads and exact-type checks (json only makes exact dicts and
    # strs). Anything unusual goes through the field-by-field validation, which names the problem.
    obj = _json(key, text)
    if type(obj) is dict:
        load, active, sub, hash_ = obj.get("load"), obj.get("active"), obj.get("sub"), obj.get("hash")
        text_state = obj.get("state", "loaded")
        if (
            type(load) is str
            and type(active) is str
            and type(sub) is str
            and type(hash_) is str
            and type(text_state) is str
            and (load + active + sub + hash_).isascii()  # else: the slow path checks for lone surrogates
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


# The states/ records as every agent writes them (encode_unit_state: compact, sorted keys) with plain text
# in the fields: a string of printable ASCII other than '"' and '\\' is its own JSON text, so a value that
# matches decodes, field by field, to exactly what json.loads gives; anything else takes decode_unit_state.
_PLAIN = r"([ !#-\[\]-~]*)"
_CANONICAL_STATE = re.compile(
    rf'\{{"active":"{_PLAIN}","hash":"{_PLAIN}","load":"{_PLAIN}","state":"(launched|loaded)","sub":"{_PLAIN}"\}}'
)
# Unit names that validate_unit_name accepts, written without it: at most MAX_NAME_LENGTH ASCII characters,
# a known type after the last dot; "@" only with a template type, never first.
_NAME_CHARS = r"-A-Za-z0-9:_.\\"
_PLAIN_UNIT_NAME = (
    rf"(?=[^/]{{1,{MAX_NAME_LENGTH}}}/)"
    rf"(?:[{_NAME_CHARS}]+\.(?:{'|'.join(sorted(UNIT_TYPES))})"
    rf"|[{_NAME_CHARS}][{_NAME_CHARS}@]*\.(?:{'|'.join(sorted(TEMPLATE_TYPES))}))"
)


@functools.cache
def _plain_state_key(states_prefix: str) -> Callable[[str], re.Match[str] | None]:
    """fullmatch of ``<states prefix><valid unit name>/<valid machine id>`` (see check_machine_id)."""
    pattern = rf"{re.escape(states_prefix)}({_PLAIN_UNIT_NAME})/({_MACHINE_ID.pattern})"
    return re.compile(pattern).fullmatch


def unit_state_decoder(keys: Keyspace) -> Callable[[str, str], UnitState]:
    """A total decoder of one ``states/<unit>/<machine>`` record, (key, value) -> UnitState: the result of
    ``keys.parse_unit_state`` and ``decode_unit_state``, and the same BadRecord when they raise one.

    For listing thousands of states (one per unit and machine): a usual key (a unit name of ASCII letters,
    digits and ``:-_.\\@`` that validate_unit_name accepts, a machine ID) and a value as the agents write it
    are each checked by one regular expression instead of a JSON parse and field checks; anything else is
    decoded the long way."""
    key_match = _plain_state_key(keys.states)
    value_match = _CANONICAL_STATE.fullmatch
    by_text = _SCHEDULED_BY_TEXT

    def decode(key: str, text: str) -> UnitState:
        parts = key_match(key)
        if parts is None:
            name, machine_id = keys.parse_unit_state(key)
        else:
            name, machine_id = UnitName(parts[1]), MachineID(parts[2])
        fields = value_match(text)
        if fields is None:
            return decode_unit_state(key, text, name, machine_id)
        active, hash_, load, state, sub = fields.groups()
        return UnitState(name, machine_id, load, active, sub, hash_, by_text[state])

    return decode
