"""Records of running a cluster (pure): failure markers, reschedule records and rolling updates.

``failed/<unit>/<machine>`` = {hash} (an agent's, on its lease: systemd reports the unit failed there),
``reschedules/<unit>`` = {hash, attempts, last, machines, reason} (the engine leader's) and
``rollouts/<name>`` = a rolling update's progress (fleetctl rolling-update's). Their keys are named by
``fleetd.registry.keyspace.Keyspace``; like every decoder there, these are total: any stored text ends in a
value or ``BadRecord``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.model import MachineID, Rescheduled, UnitName
from fleetd.registry.keyspace import (
    BadRecord,
    _check_hash,
    _dumps,
    _hash,
    _object,
    _str,
    _text,
    _total,
    check_machine_id,
    check_unit_name,
)

__all__ = [
    "ROLLOUT_PHASES",
    "Rollout",
    "decode_failed",
    "decode_rescheduled",
    "decode_rollout",
    "encode_failed",
    "encode_rescheduled",
    "encode_rollout",
]


def encode_failed(unit_hash: str) -> str:
    return _dumps({"hash": unit_hash})


@_total
def decode_failed(key: str, text: str) -> str:
    """The hash of the unit that failed (a ``failed/<unit>/<machine>`` value)."""
    return _hash(key, _object(key, text))


def encode_rescheduled(record: Rescheduled) -> str:
    return _dumps(
        {
            "hash": record.hash,
            "attempts": record.attempts,
            "last": record.last,
            "machines": list(record.machines),
            "reason": record.reason,
        }
    )


_MAX_RECORDED = 1000  # machines listed in one reschedule record


@_total
def decode_rescheduled(key: str, text: str) -> Rescheduled:
    obj = _object(key, text)
    attempts = obj.get("attempts")
    if type(attempts) is not int or not 0 <= attempts <= 1_000_000:
        raise BadRecord(key, "field 'attempts' must be a whole number from 0 to 1000000")
    last = obj.get("last")
    if type(last) not in (int, float) or not 0 <= float(last) < 1e12:  # type: ignore[arg-type]
        raise BadRecord(key, "field 'last' must be seconds since the epoch")
    machines = obj.get("machines")
    if not isinstance(machines, list) or len(machines) > _MAX_RECORDED or not all(
        isinstance(m, str) for m in machines
    ):
        raise BadRecord(key, f"field 'machines' must be a list of at most {_MAX_RECORDED} machine IDs")
    return Rescheduled(
        hash=_hash(key, obj),
        attempts=attempts,
        last=float(last),  # type: ignore[arg-type]
        machines=tuple(check_machine_id(key, m) for m in machines),
        reason=_str(key, obj, "reason"),
    )


ROLLOUT_PHASES = ("rolling", "rolling-back", "done", "failed")
_MAX_ROLLOUT_UNITS = 100_000


@dataclass(frozen=True, slots=True)
class Rollout:
    """``rollouts/<name>``: a rolling update of ``units`` to the body ``body`` (hash ``hash``), with each
    unit's hash before it (``old``) and those bodies (``old_bodies``: the engine collects unreferenced
    bodies, and a roll back needs them), the step size, and how far it got (``phase``, ``reason``)."""

    name: UnitName
    hash: str
    body: str
    units: tuple[UnitName, ...]
    old: Mapping[UnitName, str]
    old_bodies: Mapping[str, str]
    max_unavailable: int
    phase: str = "rolling"
    reason: str = ""
    replaced: tuple[UnitName, ...] = ()  # units given the new body so far (a roll back restores only these)
    # A Global unit (``units`` is that one unit) is rolled machine by machine: the machines it ran on, and
    # those whose hash pin was removed so far (a roll back pins only these to the old hash again).
    machines: tuple[MachineID, ...] = ()
    machines_replaced: tuple[MachineID, ...] = ()


def encode_rollout(rollout: Rollout) -> str:
    return _dumps(
        {
            "hash": rollout.hash,
            "body": rollout.body,
            "units": list(rollout.units),
            "old": dict(rollout.old),
            "old_bodies": dict(rollout.old_bodies),
            "max_unavailable": rollout.max_unavailable,
            "phase": rollout.phase,
            "reason": rollout.reason,
            "replaced": list(rollout.replaced),
            **(
                {"machines": list(rollout.machines), "machines_replaced": list(rollout.machines_replaced)}
                if rollout.machines else {}
            ),
        }
    )


def _str_map(key: str, obj: Mapping[str, object], field: str) -> dict[str, str]:
    value = obj.get(field)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRecord(key, f"field {field!r} must map strings to strings")
    for k, v in value.items():
        _text(key, k + v, f"field {field!r}")
    return dict(value)


def _unit_list(key: str, obj: Mapping[str, object], field: str) -> tuple[UnitName, ...]:
    units = obj.get(field, [])
    if not isinstance(units, list) or len(units) > _MAX_ROLLOUT_UNITS or not all(
        isinstance(u, str) for u in units
    ):
        raise BadRecord(key, f"field {field!r} must be a list of at most {_MAX_ROLLOUT_UNITS} unit names")
    return tuple(check_unit_name(key, u) for u in units)


def _machine_list(key: str, obj: Mapping[str, object], field: str) -> tuple[MachineID, ...]:
    machines = obj.get(field, [])
    if not isinstance(machines, list) or len(machines) > _MAX_ROLLOUT_UNITS or not all(
        isinstance(m, str) for m in machines
    ):
        raise BadRecord(key, f"field {field!r} must be a list of at most {_MAX_ROLLOUT_UNITS} machine IDs")
    return tuple(check_machine_id(key, m) for m in machines)


@_total
def decode_rollout(key: str, text: str) -> Rollout:
    obj = _object(key, text)
    step = obj.get("max_unavailable")
    if type(step) is not int or not 1 <= step <= _MAX_ROLLOUT_UNITS:
        raise BadRecord(key, f"field 'max_unavailable' must be a whole number from 1 to {_MAX_ROLLOUT_UNITS}")
    phase = _str(key, obj, "phase")
    if phase not in ROLLOUT_PHASES:
        raise BadRecord(key, f"field 'phase' must be one of {', '.join(ROLLOUT_PHASES)}")
    old_hashes = _str_map(key, obj, "old")
    old = {check_unit_name(key, n): _check_hash(key, h, "an old hash") for n, h in old_hashes.items()}
    bodies = _str_map(key, obj, "old_bodies")
    old_bodies = {_check_hash(key, h, "an old body hash"): b for h, b in bodies.items()}
    name = key.rsplit("/", 1)[-1]
    return Rollout(
        name=check_unit_name(key, name),
        hash=_hash(key, obj),
        body=_str(key, obj, "body"),
        units=_unit_list(key, obj, "units"),
        old=old,
        old_bodies=old_bodies,
        max_unavailable=step,
        phase=phase,
        reason=_str(key, obj, "reason", default=""),
        replaced=_unit_list(key, obj, "replaced"),
        machines=_machine_list(key, obj, "machines"),
        machines_replaced=_machine_list(key, obj, "machines_replaced"),
    )
