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
    fields = table.fields
    columns: list[list[str]] = [[row[name] for row in table.rows] for name in fields]
    if legend:
        for name, column in zip(fields, columns, strict=True):
            column.insert(0, name.upper())
    height = len(columns[0]) if columns else len(table.rows) + legend
    if not height:
        return ""
    if not columns:
        return "\n" * height
    padded = [_padded(column) for column in columns[:-1]]
    padded.append([cell + "\n" for cell in columns[-1]])
    return "".join(map("".join, zip(*padded, strict=True)))


def _padded(column: list[str]) -> list[str]:
    """Each cell followed by the TABs that reach the column's width (its longest cell plus one, rounded up
    to a multiple of TAB_WIDTH); the TAB runs are precomputed per cell length."""
    longest = max(map(len, column))
    width = -(-(longest + 1) // TAB_WIDTH) * TAB_WIDTH
    tabs = ["\t" * -(-(width - length) // TAB_WIDTH) for length in range(longest + 1)]
    return [cell + tabs[len(cell)] for cell in column]


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
