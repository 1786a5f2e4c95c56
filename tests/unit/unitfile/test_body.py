"""checked_unit_file and checked_unit_bytes: one policy for unit bodies; canonical forms are fixed points."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.errors import UnitFileError
from fleetd.unitfile.body import MAX_BODY_BYTES, checked_unit_bytes, checked_unit_file, decode_unit_text
from fleetd.unitfile.parser import LINE_MAX, parse
from fleetd.unitfile.unit import UnitFile, canonical_order, serialize

GOOD = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep 100\n"

REJECTED = [
    pytest.param("[Unit]\nDescription=caf\xe9\n".encode("latin-1"),
                 "not valid UTF-8 text (line 2); save it as UTF-8", None, id="Latin-1 text"),
    pytest.param(b"[Unit]\nA=b\n" + b"#" * MAX_BODY_BYTES,
                 f"unit file is {MAX_BODY_BYTES + 11} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MiB):"
                 " make it smaller", None, id="over 1 MiB"),
    pytest.param(b"[Unit]\nA=b\x00c\n", "contains a NUL character (line 2); a unit file is text: remove it",
                 None, id="a NUL character"),
    pytest.param(b"[Unit]\nbroken\n", "unexpected newline encountered while parsing option name", 2,
                 id="does not parse"),
    pytest.param(b"[X-Fleet]\nMachineID=a\nGlobal=true\n", "MachineID cannot be used with Global", 3,
                 id="invalid [X-Fleet] combination"),
    pytest.param(b"[Service]\nExecStart=/bin/true \\",
                 "ExecStart: the backslash at the end of the file continues nothing; remove it or add the"
                 " next line", 2, id="a backslash at the end of the file"),
]


@pytest.mark.parametrize(("data", "message", "line"), REJECTED)
def test_rejected_bodies(data: bytes, message: str, line: int | None) -> None:
    with pytest.raises(UnitFileError) as info:
        checked_unit_bytes(data)
    assert (info.value.msg, info.value.line) == (message, line)


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    data = b"[Unit]\nA=b\n" + b"\n" * (MAX_BODY_BYTES - 11)
    assert checked_unit_bytes(data).canonical == "[Unit]\nA=b\n"


def test_bytes_and_text_are_judged_alike() -> None:
    assert checked_unit_bytes(GOOD.encode()) == checked_unit_file(GOOD)
    assert decode_unit_text(GOOD.encode()) == GOOD


def test_text_with_lone_surrogates_is_not_utf8() -> None:
    with pytest.raises(UnitFileError, match=r"not valid UTF-8 text \(line 2\)"):
        checked_unit_file("[Unit]\nA=\udce9\n")


# -- the canonical form is a fixed point -------------------------------------------------------------------

# Characters the lexer treats specially, Go-only whitespace, Unicode line separators, and long runs.
_NASTY = st.sampled_from([
    "[", "]", "=", "#", ";", "\\", " ", "\t", "\r", "\n", "\x00", "\x85", "\xa0", "\u2028", "\x0b", "\x0c",
    "\x1c", "a", "é", "☃", "\U0001f600", "X-Fleet", "Unit", "\\\n", "\\\r\n", "\\ \n", '"', "%n",
    "\r" + "x" * 600, "y" * 700, "é" * 520, "\n[X-Fleet]\n", "\nGlobal=true\n", "\nMachineID=a\n",
])
_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(_NASTY, max_size=60).map("".join),
    st.lists(st.one_of(_NASTY, st.text(max_size=6)), max_size=60).map("".join),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_accepted_bodies_have_a_canonical_form_that_is_a_fixed_point(text: str) -> None:
    try:
        unit = checked_unit_file(text)
    except UnitFileError:
        return
    again = checked_unit_file(unit.canonical)
    assert again.options == canonical_order(unit.options)
    assert (again.canonical, again.hash) == (unit.canonical, unit.hash)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_whatever_the_parser_accepts_its_canonical_form_reads_back_the_same(text: str) -> None:
    # Stronger than the property above: checked_unit_file also guards the fixed point itself, so this
    # one checks the parser and serialize directly (the guard must never be what rejects a body).
    try:
        options = parse(text)
    except UnitFileError:
        return
    canonical = serialize(options)
    assert parse(canonical) == canonical_order(options)
    assert UnitFile(parse(canonical)).hash == UnitFile(options).hash


CANONICAL_CASES = [
    pytest.param("[S]\nA=x\\\n\nB=y\n", id="continuation ended by a blank line"),
    pytest.param("[S]\nA=x\\\n#c\\\n;d\\\n[e]\n", id="comment and section characters in continuation lines"),
    pytest.param("[S]\n  A  =  x  \n", id="whitespace around names and values"),
    pytest.param("[S]\nA=\nB= \t\n", id="empty values"),
    pytest.param("[S]\nA=x\ry\n", id="carriage return inside a value"),
    pytest.param("[S]\r\nA=x\r\n", id="CRLF single-line values"),
    pytest.param("[S]\n=x\n", id="empty name"),
    pytest.param("[a\nb=c;#[d]\nA=x\n", id="section name with newline, equals and comment characters"),
    pytest.param("[S]\n\rA=" + "x" * (LINE_MAX - 10) + "\n", id="a line just under the limit after a CR"),
    pytest.param("[S]\nA=1\n[T]\nB=2\n[S]\nC=3\n", id="a repeated section is merged"),
    pytest.param("[S]\nA=\x85x\u2028\n", id="Go whitespace is trimmed, Unicode separators are kept"),
]


@pytest.mark.parametrize("text", CANONICAL_CASES)
def test_canonical_cases_are_fixed_points(text: str) -> None:
    unit = checked_unit_file(text)
    assert checked_unit_file(unit.canonical).canonical == unit.canonical
