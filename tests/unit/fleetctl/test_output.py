"""Table rendering with Go tabwriter rules, --fields validation, machine legends and JSON."""

from __future__ import annotations

import json

import pytest

from fleetctl.output import FieldsError, Table, machine_legend, parse_fields, render_json, render_table


def test_columns_pad_with_tabs_to_multiples_of_eight() -> None:
    table = Table(("unit", "machine"), ({"unit": "hello.service", "machine": "-"},))
    # "hello.service" is 13 long: width (13+1) rounded up to 16; header "UNIT" (4) gets 2 tabs, the cell 1.
    assert render_table(table) == "UNIT\t\tMACHINE\nhello.service\t-\n"


def test_a_cell_of_exactly_eight_needs_a_second_column_stop() -> None:
    table = Table(("a", "b"), ({"a": "12345678", "b": "x"}, {"a": "1", "b": "y"}))
    assert render_table(table, legend=False) == "12345678\tx\n1\t\ty\n"


def test_no_legend_and_no_rows_is_empty() -> None:
    assert render_table(Table(("unit",), ()), legend=False) == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "Must define output format"), ("unit,bogus", 'Invalid key in output format: "bogus"')],
)
def test_bad_fields(spec: str, message: str) -> None:
    with pytest.raises(FieldsError) as err:
        parse_fields(spec, ("unit", "hash"))
    assert str(err.value) == message


def test_fields_keep_the_given_order() -> None:
    assert parse_fields("hash,unit", ("unit", "hash")) == ("hash", "unit")


def test_machine_legend() -> None:
    assert machine_legend("1a2b3c4d5e6f", "10.0.0.1", full=False) == "1a2b3c4d.../10.0.0.1"
    assert machine_legend("1a2b3c4d5e6f", "", full=False) == "1a2b3c4d..."
    assert machine_legend("1a2b3c4d5e6f", "10.0.0.1", full=True) == "1a2b3c4d5e6f/10.0.0.1"


def test_json_is_printable_ascii_whatever_the_values() -> None:
    document = [{"desc": "\x1b[2J\x9b\x7f caf\u00e9 \udcff", "n": None, "ok": True}]
    for compact in (False, True):
        text = render_json(document, compact=compact)
        assert set(text) <= {chr(code) for code in range(0x20, 0x7F)} | {"\n"}
        assert json.loads(text) == document
    assert render_json({"a": [1]}, compact=True) == '{"a":[1]}\n'


def test_every_column_but_the_last_is_padded_to_its_own_width() -> None:
    rows = (
        {"a": "x" * 15, "b": "", "c": "last one is never padded"},
        {"a": "", "b": "y" * 9, "c": ""},
    )
    # a: 15+1 -> 16; b: 9+1 -> 16 (the header "B" alone would need 8); c: no padding at all.
    assert render_table(Table(("a", "b", "c"), rows)) == (
        "A\t\tB\t\tC\n" + "x" * 15 + "\t\t\tlast one is never padded\n" + "\t\t" + "y" * 9 + "\t\n"
    )
    assert render_table(Table(("c",), rows), legend=False) == "last one is never padded\n\n"
