"""UnitFile: canonical form, hash, contents map and multi-values (fleet's unit_test.go cases)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.errors import UnitFileError
from fleetd.unitfile.parser import UnitOption, parse
from fleetd.unitfile.unit import EMPTY_HASH, UnitFile, canonical_order, parse_hash, parse_multivalue

HASHES = [
    pytest.param("[Service]\nExecStart=/bin/sleep 100\n", "1c6fb6f3684bafb0c173d8b8b957ceff031180c1",
                 id="unit hash of a one-line service"),
    pytest.param("[Unit]\nDescription=some description\n", "a0f275d46bc6ee0eca06be7c339913c07d99c0c7",
                 id="unit hash of a description-only unit"),
    pytest.param("", "da39a3ee5e6b4b0d3255bfef95601890afd80709", id="empty unit hashes to SHA-1 of nothing"),
    pytest.param("# only a comment\n\n[Unit]\n", EMPTY_HASH,
                 id="a unit with no options hashes like the empty unit"),
    pytest.param("; c\n[Service]\n  ExecStart = /bin/sleep 100  \n# tail\n",
                 "1c6fb6f3684bafb0c173d8b8b957ceff031180c1",
                 id="comments and spacing do not change the hash"),
]


@pytest.mark.parametrize(("text", "expected"), HASHES)
def test_hash(text: str, expected: str) -> None:
    unit = UnitFile.from_text(text)
    assert unit.hash == expected
    assert unit.short_hash == expected[:7]


CANONICAL = [
    pytest.param("", "", id="no options serialize to the empty string"),
    pytest.param("[Unit]\nDescription = Foo\n", "[Unit]\nDescription=Foo\n", id="one section"),
    pytest.param("[Unit]\nA=1\n\n\n[Service]\nB=2\n", "[Unit]\nA=1\n\n[Service]\nB=2\n",
                 id="one blank line between sections and none after the last"),
    pytest.param("[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nC=3\n", "[Unit]\nA=1\nC=3\n\n[Service]\nB=2\n",
                 id="repeated sections merge at their first appearance"),
    pytest.param("[Empty]\n[Unit]\nA=1\n", "[Unit]\nA=1\n", id="sections without options disappear"),
    pytest.param("[Service]\nExecStart=a \\\n  b\n", "[Service]\nExecStart=a \\\n  b\n",
                 id="continuations are written back verbatim"),
]


@pytest.mark.parametrize(("text", "expected"), CANONICAL)
def test_canonical(text: str, expected: str) -> None:
    assert UnitFile.from_text(text).canonical == expected


def test_serialize_then_parse_keeps_the_options() -> None:
    unit = UnitFile.from_text("\n[Unit]\nDescription = Foo\n")
    assert UnitFile.from_text(unit.canonical) == unit
    assert unit.description == "Foo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[Unit]\nDescription = Foo\n", "Foo", id="description"),
        pytest.param("[Unit]\nDescription=a\nDescription=b\n", "a", id="the first description wins"),
        pytest.param("[Unit]\nAfter=x\n", "", id="description not defined"),
        pytest.param("[Service]\nDescription=x\n", "", id="description outside [Unit] does not count"),
    ],
)
def test_description(text: str, expected: str) -> None:
    assert UnitFile.from_text(text).description == expected


def test_has_install_section() -> None:
    assert UnitFile.from_text("[Install]\nWantedBy=multi-user.target\n").has_install_section
    assert not UnitFile.from_text("[Install]\n[Service]\nA=b\n").has_install_section


def test_contents_split_quoted_values_only_in_x_fleet() -> None:
    unit = UnitFile.from_text(
        "\nThis=Ignored\n[Unit]\n;ignore this guy\nDescription = Foo\n\n[Service]\nExecStart=echo \"ping\";\n"
        "ExecStop=echo \"pong\"\n# ignore me, too\nExecStop=echo post\n\n[X-Fleet]\nMachineMetadata=foo=bar\n"
        "MachineMetadata=baz=qux\nMachineOf=\"a.service\" \"b.service\"\n"
        "[Service]\nEnvironment=\"A=1\" \"B=2\"\n"
    )
    assert unit.contents == {
        "Unit": {"Description": ["Foo"]},
        "Service": {
            "ExecStart": ['echo "ping";'],
            "ExecStop": ['echo "pong"', "echo post"],
            "Environment": ['"A=1" "B=2"'],
        },
        "X-Fleet": {"MachineMetadata": ["foo=bar", "baz=qux"], "MachineOf": ["a.service", "b.service"]},
    }


def test_contents_is_a_fresh_copy() -> None:
    unit = UnitFile.from_text("[Unit]\nA=b\n")
    unit.contents["Unit"]["A"].append("mutated")
    assert unit.contents == {"Unit": {"A": ["b"]}}


MULTIVALUES = [
    pytest.param('"bar" "ping" "pong"', ["bar", "ping", "pong"], id="three quoted values"),
    pytest.param('"bar"', ["bar"], id="one quoted value"),
    pytest.param("", [""], id="empty line is one empty value"),
    pytest.param('""', [""], id="empty quotes are one empty value"),
    pytest.param('"bar', ['"bar'], id="unterminated quote stays verbatim"),
    pytest.param('bar"', ['bar"'], id="unopened quote stays verbatim"),
    pytest.param('foo\\"bar', ['foo\\"bar'], id="unquoted value with escaped quote stays verbatim"),
    pytest.param('"bar" "', ["bar", ""], id="trailing lone quote adds an empty value"),
    pytest.param('"foo\\"bar"', ["foo\\bar"], id="backslash is not an escape inside quotes"),
    pytest.param('"a"  "b"', ["a", "", "b"], id="two spaces between values give an empty value"),
    pytest.param('"a b" "c"', ["a b", "c"], id="a space inside quotes is kept"),
]


@pytest.mark.parametrize(("line", "expected"), MULTIVALUES)
def test_parse_multivalue(line: str, expected: list[str]) -> None:
    assert parse_multivalue(line) == expected


def test_from_options_builds_the_same_unit() -> None:
    unit = UnitFile.from_options([("Service", "ExecStart", "/bin/sleep 100")])
    assert unit == UnitFile.from_text("[Service]\nExecStart=/bin/sleep 100\n")
    assert unit.hash == "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1c6fb6f3684bafb0c173d8b8b957ceff031180c1", "1c6fb6f3684bafb0c173d8b8b957ceff031180c1",
                     id="hex round-trips"),
        pytest.param("1C6FB6F3684BAFB0C173D8B8B957CEFF031180C1", "1c6fb6f3684bafb0c173d8b8b957ceff031180c1",
                     id="upper-case hex is normalised"),
    ],
)
def test_parse_hash(text: str, expected: str) -> None:
    assert parse_hash(text) == expected


@pytest.mark.parametrize("text", ["", "1c6fb6f", "1c6fb6f3684bafb0c173d8b8b957ceff031180c1aa",
                                  "zc6fb6f3684bafb0c173d8b8b957ceff031180c1"],
                         ids=["empty", "short hash", "too long", "not hex"])
def test_parse_hash_rejects(text: str) -> None:
    with pytest.raises(UnitFileError, match="invalid unit hash"):
        parse_hash(text)


# -- properties --------------------------------------------------------------------------------------

_SECTION = st.from_regex(r"[A-Za-z0-9 _\-é\[=#;\\]{1,8}", fullmatch=True)
_NAME = st.from_regex(r"[A-Za-z0-9_\-.é@\]\\]([A-Za-z0-9_\-.é@ \]\\#;\[]{0,6}[A-Za-z0-9_\-.é@\]\\])?",
                      fullmatch=True)
_LINE = st.from_regex(r"[^\s\\]([^\r\n]{0,8}[^\s\\])?", fullmatch=True)
_VALUE = st.one_of(
    st.just(""),
    _LINE,
    st.lists(_LINE, min_size=2, max_size=3).map("\\\n".join),
    _LINE.map(lambda s: s + "\\\n"),
)


_OPTIONS = st.lists(st.builds(UnitOption, _SECTION, _NAME, _VALUE), max_size=8).map(canonical_order)


@settings(max_examples=100)
@given(_OPTIONS)
def test_parse_of_canonical_gives_back_the_options(options: tuple[UnitOption, ...]) -> None:
    unit = UnitFile(options)
    assert parse(unit.canonical) == options
    assert UnitFile.from_text(unit.canonical).hash == unit.hash


@settings(max_examples=100)
@given(_OPTIONS, st.lists(st.sampled_from(["", "   ", "# comment", "; other", "#", "\t"]), min_size=1))
def test_hash_ignores_comments_and_blank_lines(options: tuple[UnitOption, ...], noise: list[str]) -> None:
    unit = UnitFile(options)
    lines = unit.canonical.split("\n")
    # Insert noise only where a new line starts an option or section header (never inside a continuation).
    safe = [i for i, line in enumerate(lines) if i == 0 or not lines[i - 1].endswith("\\")]
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in safe:
            out.extend(noise)
        out.append(line)
    noisy = "\n".join(out)
    assert UnitFile.from_text(noisy).hash == unit.hash
