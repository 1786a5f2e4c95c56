"""Rendering of fleetctl's tables and JSON, and the one way registry text reaches the terminal.

Tables follow Go ``text/tabwriter`` (minwidth 0, tabwidth 8, padding 1, TAB padding): a column is as wide as
its longest cell plus one, rounded up to a multiple of 8; every cell but the last of a line is followed by
enough TABs to reach that width. The header is the field names upper-cased.

Registry and unit-file text (unit names, Description, machine metadata and IPs, states, the errors that
echo them, whole unit files for ``cat``) is input from whoever can write to etcd. Printed raw, an escape
sequence in a Description could rewrite the user's terminal. So every human-facing line goes through
``visible``: C0 controls, DEL and C1 controls become visible backslash escapes (ESC prints as the four
characters ``\\x1b``, U+009B as ``\\x9b``), and lone surrogates (undecodable bytes from argv or the
environment) as ``\\udcff``. Backslashes themselves are left alone, so unit files still read naturally.
Multi-line text (``cat``, messages) keeps its newlines and TABs; a table cell escapes those too (as
``\\x0a`` and ``\\x09``) so a row stays one row. ``say`` is ``click.echo`` through ``visible``. JSON output
needs none of this: ``json.dumps`` escapes every control character itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import click

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
    "say",
    "short_hash",
    "visible",
]

TAB_WIDTH = 8
SHORT_HASH_LENGTH = 7
FULL_HASH_LENGTH = 40


_CONTROL_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # keeps \t and \n


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, multiline: bool = False) -> str:
    """``text`` safe to print on a terminal: control characters (and, unless ``multiline``, newlines and
    TABs) as ``\\xNN`` escapes, lone surrogates as ``\\uNNNN``."""
    pattern = _CONTROL_IN_TEXT if multiline else _CONTROL_IN_LINE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def say(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` (which may hold registry data) through ``visible``, newlines kept."""
    click.echo(visible(text, multiline=True), err=err, nl=nl)


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
    columns = [_visible_cells([row[name] for row in table.rows]) for name in fields]
    if legend:
        for name, column in zip(fields, columns, strict=True):
            column.insert(0, name.upper())
    height = len(columns[0]) if columns else len(table.rows) + legend
    if not height:
        return ""
    if not columns:
        return "\n" * height
    pieces: list[list[str]] = []
    for column in columns[:-1]:
        pieces += (column, _tab_runs(column))
    pieces += (columns[-1], ["\n"] * height)
    return "".join(chain.from_iterable(zip(*pieces, strict=True)))


def _visible_cells(cells: list[str]) -> list[str]:
    """``visible`` of each cell: one search over the whole column first (usually nothing to escape)."""
    if _CONTROL_IN_LINE.search("".join(cells)) is None:
        return cells
    return [visible(cell) for cell in cells]


def _tab_runs(column: list[str]) -> list[str]:
    """The TABs after each cell that reach the column's width (its longest cell plus one, rounded up to a
    multiple of TAB_WIDTH); the TAB runs are precomputed per cell length."""
    longest = max(map(len, column))
    width = -(-(longest + 1) // TAB_WIDTH) * TAB_WIDTH
    tabs = ["\t" * -(-(width - length) // TAB_WIDTH) for length in range(longest + 1)]
    return [tabs[len(cell)] for cell in column]


def render_json(document: object, *, compact: bool = False) -> str:
    """``document`` as one JSON text ending in a newline (indented, or on one line with ``compact``).

    ASCII only: every control character, DEL, C1 control and non-ASCII character is a ``\\uXXXX`` escape,
    so registry text cannot reach the terminal raw and ``visible`` is not applied (it would find nothing
    to escape); lone surrogates come through as escapes too instead of failing to encode."""
    if compact:
        return json.dumps(document, ensure_ascii=True, separators=(",", ":")) + "\n"
    return json.dumps(document, ensure_ascii=True, indent=2) + "\n"


def short_hash(digest: str, *, full: bool) -> str:
    return digest if full else digest[:SHORT_HASH_LENGTH]


def machine_legend(machine_id: str, public_ip: str, *, full: bool) -> str:
    """``1a2b3c4d.../10.0.0.1`` (the full ID with ``full``; no ``/ip`` part when the IP is unknown)."""
    shown = machine_id if full else f"{machine_id[:SHORT_ID_LENGTH]}..."
    return f"{shown}/{public_ip}" if public_ip else shown
