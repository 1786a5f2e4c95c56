"""The JSON records of ``list-machines``, ``list-units`` and ``list-unit-files`` (``--output json``).

Pure: rows in, plain dicts out. Values are typed for scripts: ``None`` (JSON null) for what is unknown or
absent, never the tables' ``-``; metadata as an object; machine ID and IP in separate fields; states as the
strings fleet and systemd use; hashes both full and short. The schema is documented in
docs/fleetctl-json.md; change both together.
"""

from __future__ import annotations

from typing import Any

from fleetctl.client import UnitFileRow, UnitStateRow
from fleetctl.output import short_hash
from fleetd.model import MachineState

__all__ = ["Record", "machine_record", "machine_schedulability", "unit_file_record", "unit_state_record"]

Record = dict[str, Any]


def _text(value: str) -> str | None:
    return value or None


def machine_schedulability(cordoned: bool) -> str:
    """``cordoned`` after fleetctl drain (until fleetctl uncordon), else ``schedulable``."""
    return "cordoned" if cordoned else "schedulable"


def machine_record(machine: MachineState, cordoned: bool = False) -> Record:
    return {
        "machine_id": machine.id,
        "short_id": machine.short_id,
        "ip": _text(machine.public_ip),
        "metadata": {key: machine.metadata[key] for key in sorted(machine.metadata)},
        "version": _text(machine.version),
        "state": machine_schedulability(cordoned),
        "max_units": machine.max_units or None,
    }


def unit_state_record(row: UnitStateRow) -> Record:
    state = row.state
    return {
        "unit": state.name,
        "machine_id": _text(state.machine_id),
        "machine_ip": _text(row.machine.public_ip) if row.machine is not None else None,
        "state": state.state.value,
        "load_state": _text(state.load_state),
        "active_state": _text(state.active_state),
        "sub_state": _text(state.sub_state),
        "hash": _text(state.hash),
        "short_hash": short_hash(state.hash, full=False) if state.hash else None,
    }


def unit_file_record(row: UnitFileRow) -> Record:
    record = row.record
    target_id: str | None = None
    target_ip: str | None = None
    if isinstance(row.target, MachineState):
        target_id, target_ip = row.target.id, _text(row.target.public_ip)
    elif row.target is not None:
        target_id = row.target  # scheduled on a machine that is not live: its IP is unknown
    return {
        "unit": record.name,
        "hash": record.hash,
        "short_hash": short_hash(record.hash, full=False),
        "global": record.is_global,
        "desired_state": record.target_state.value,
        "state": row.current.value if row.current is not None else None,
        "target_machine_id": target_id,
        "target_machine_ip": target_ip,
        "description": _text(row.description),
        "reason": _text(row.reason) if row.reason else None,
    }
