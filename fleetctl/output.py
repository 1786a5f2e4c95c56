"""Pure rendering of fleetctl's tables and JSON (no I/O).

Tables follow Go ``text/tabwriter`` (minwidth 0, tabwidth 8, padding 1, TAB padding): a column is as wide as
its longest cell plus one, rounded up to a multiple of 8; every cell but the last of a line is followed by
enough TABs to reach that width. The header is the field names upper-cased.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetd.errors import FleetError
from fleetd.model import SHORT_ID_LENGTH

__all__ = [
    "FULL_HASH_LENGTH",
    "SHORT_HASH_LENGTH",
    "FieldsError",
    "Table",
    "machine_legend",
    "parse_fields",
    "render_json",
    "render_table",
    "short_hash",
]

TAB_WIDTH = 8
SHORT_HASH_LENGTH = 7
FULL_HASH_LENGTH = 40


class FieldsError(FleetError):
    """A bad ``--fields`` value; the message is the reference's exact text."""


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of cells keyed by field name, rendered for the fields the user asked for."""

    fields: tuple[str, ...]
    rows: tuple[Mapping[str, str], ...]


def parse_fields(spec: str, valid: Sequence[str]) -> tuple[str, ...]:
    """Split a ``--fields`` value and check every name; raises FieldsError with the reference's messages."""
    if not spec.strip():
        raise FieldsError("Must define output format")
    fields = tuple(part.strip() for part in spec.split(","))
    for name in fields:
        if name not in valid:
            raise FieldsError(f'Invalid key in output format: "{name}"')
    return fields


def render_table(table: Table, *, legend: bool = True) -> str:
    """The tabwriter text of ``table`` (one line per row, each ending in a newline)."""
    lines: list[Sequence[str]] = []
    if legend:
        lines.append([name.upper() for name in table.fields])
    lines.extend([row[name] for name in table.fields] for row in table.rows)
    if not lines:
        return ""
    columns = len(table.fields)
    widths = [0] * columns
    for cells in lines:
        for index, cell in enumerate(cells[:-1]):
            widths[index] = max(widths[index], _column_width(cell))
    out: list[str] = []
    for cells in lines:
        parts: list[str] = []
        for index, cell in enumerate(cells):
            parts.append(cell)
            if index < columns - 1:
                parts.append("\t" * -(-(widths[index] - len(cell)) // TAB_WIDTH))
        out.append("".join(parts) + "\n")
    return "".join(out)


def _column_width(cell: str) -> int:
    return -(-(len(cell) + 1) // TAB_WIDTH) * TAB_WIDTH


def render_json(table: Table) -> str:
    """A JSON array of objects holding the requested fields, one object per row, for scripts."""
    rows = [{name: row[name] for name in table.fields} for row in table.rows]
    return json.dumps(rows, indent=2, sort_keys=False) + "\n"


def short_hash(digest: str, *, full: bool) -> str:
    return digest if full else digest[:SHORT_HASH_LENGTH]


def machine_legend(machine_id: str, public_ip: str, *, full: bool) -> str:
    """``1a2b3c4d.../10.0.0.1`` (the full ID with ``full``; no ``/ip`` part when the IP is unknown)."""
    shown = machine_id if full else f"{machine_id[:SHORT_ID_LENGTH]}..."
    return f"{shown}/{public_ip}" if public_ip else shown
