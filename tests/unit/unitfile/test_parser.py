"""The unit-file lexer: fleet's TestDeserialize* cases plus the lexer rules of the reference (§3.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.errors import UnitFileError
from fleetd.unitfile.parser import LINE_MAX, UnitOption, _Lexer, _simple, parse


def triples(text: str) -> list[tuple[str, str, str]]:
    return [(o.section, o.name, o.value) for o in parse(text)]


PARSES = [
    pytest.param(
        "\nThis=Ignored\n[Unit]\n;ignore this guy\nDescription = Foo\n\n[Service]\nExecStart=echo \"ping\";\n"
        "ExecStop=echo \"pong\"\n# ignore me, too\nExecStop=echo post\n\n[X-Fleet]\nMachineMetadata=foo=bar\n"
        "MachineMetadata=baz=qux\n",
        [
            ("Unit", "Description", "Foo"),
            ("Service", "ExecStart", 'echo "ping";'),
            ("Service", "ExecStop", 'echo "pong"'),
            ("Service", "ExecStop", "echo post"),
            ("X-Fleet", "MachineMetadata", "foo=bar"),
            ("X-Fleet", "MachineMetadata", "baz=qux"),
        ],
        id="deserialize: options before a section and comments are ignored, duplicates kept in order",
    ),
    pytest.param(
        "\n>>>>>>>>>>>>>\n[Service]\nExecStart=jim\n# As long as ...\n<<<<<<<<<<<=bar\n",
        [("Service", "ExecStart", "jim"), ("Service", "<<<<<<<<<<<", "bar")],
        id="garbage before the first section is skipped and an odd name is still a name",
    ),
    pytest.param(
        '[Service]\nExecStart=echo \\\n  "pi\\\n  ng"\n',
        [("Service", "ExecStart", 'echo \\\n  "pi\\\n  ng"')],
        id="escaped multiline: continuation keeps backslash, newline and the next line's indent",
    ),
    pytest.param(
        '[Service]\nExecStop=\\\necho "po\\\nng"\n',
        [("Service", "ExecStop", '\\\necho "po\\\nng"')],
        id="escaped multiline: value starting with a continuation",
    ),
    pytest.param(
        "[Service]\nExecStopPre=echo\\\n#pang\n",
        [("Service", "ExecStopPre", "echo\\\n#pang")],
        id="a comment-looking line inside a continuation is part of the value",
    ),
    pytest.param(
        "[Service]\nExecStopPost=echo\\\n#peng\\\npung\n",
        [("Service", "ExecStopPost", "echo\\\n#peng\\\npung")],
        id="a continuation runs through several lines",
    ),
    pytest.param(
        "[Service]\nA=one\\\n   \nB=two\n",
        [("Service", "A", "one\\\n"), ("Service", "B", "two")],
        id="a whitespace-only line ends a continuation and the value keeps one trailing newline",
    ),
    pytest.param(
        "[Service]\nA=one\\two\nB=x\n",
        [("Service", "A", "one\\two"), ("Service", "B", "x")],
        id="a backslash followed by other characters is not a continuation",
    ),
    pytest.param(
        "\n[Unit]\nDescription = Foo\n",
        [("Unit", "Description", "Foo")],
        id="serialize-deserialize: spaces around the equals sign are trimmed",
    ),
    pytest.param(
        "[Unit]\nSome Thing = Bar\n",
        [("Unit", "Some Thing", "Bar")],
        id="option names may contain inner spaces",
    ),
    pytest.param(
        "[Unit]\n   Description=   padded value   \t\n",
        [("Unit", "Description", "padded value")],
        id="leading indentation and surrounding value whitespace are dropped",
    ),
    pytest.param(
        "[Unit]\nDescription=a=b=c\n",
        [("Unit", "Description", "a=b=c")],
        id="only the first equals sign splits name from value",
    ),
    pytest.param(
        '[X-Fleet]\nMachineOf="a.service" "b.service"\n',
        [("X-Fleet", "MachineOf", '"a.service" "b.service"')],
        id="quotes are not interpreted by the lexer",
    ),
    pytest.param(
        "[Unit]\n# comment \\\nDescription=swallowed\nAfter=x\n",
        [("Unit", "After", "x")],
        id="a comment ending in backslash swallows the next line",
    ),
    pytest.param(
        "[Unit]\n  ; comment \\ \nDescription=swallowed\nAfter=x\n",
        [("Unit", "After", "x")],
        id="an indented comment ending in backslash and one space swallows the next line",
    ),
    pytest.param(
        "[Unit]\n# comment \\  \nDescription=kept\n",
        [("Unit", "Description", "kept")],
        id="only one trailing space is dropped before the comment continuation check",
    ),
    pytest.param(
        "# c \\\n[NotASection]\n[Unit]\nA=b\n",
        [("Unit", "A", "b")],
        id="a comment continuation before the first section also swallows a line",
    ),
    pytest.param(
        "junk [Unit]\nA=b\n",
        [("Unit", "A", "b")],
        id="a section may start in the middle of garbage before the first section",
    ),
    pytest.param(
        "junk # [Unit]\n[Service]\nA=b\n",
        [("Service", "A", "b")],
        id="a comment character before the first section hides the rest of its line",
    ),
    pytest.param(
        "[Unit]\r\nDescription=crlf\r\nAfter=x\r\n",
        [("Unit", "Description", "crlf"), ("Unit", "After", "x")],
        id="CRLF line endings: the carriage return is trimmed from single-line values",
    ),
    pytest.param(
        "[Unit]\nA=\\\n#x\\\n;y\\\n[z]\\\n\nB=\n",
        [("Unit", "A", "\\\n#x\\\n;y\\\n[z]\\\n"), ("Unit", "B", "")],
        id="comment characters and brackets at the start of continuation lines belong to the value",
    ),
    pytest.param(
        "[Unit]\nA=x\\\n\n",
        [("Unit", "A", "x\\\n")],
        id="a continuation ended by a blank line keeps one newline",
    ),
    pytest.param("[a=b;#[c\nd]\nK=v\n", [("a=b;#[c\nd", "K", "v")], id="a section name may span lines"),
    pytest.param("[Unit]\n=v\n", [("Unit", "", "v")], id="an empty option name"),
    pytest.param("[Unit]\nA=x\ry\0\n", [("Unit", "A", "x\ry\0")], id="CR and NUL inside a value are kept"),
    pytest.param(
        "[Unit]\nDescription=ünïcödé ☃\n[Sèction]\nKéy=✓\n",
        [("Unit", "Description", "ünïcödé ☃"), ("Sèction", "Kéy", "✓")],
        id="UTF-8 is preserved in section names, keys and values",
    ),
    pytest.param(
        "[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nC=3\n",
        [("Unit", "A", "1"), ("Service", "B", "2"), ("Unit", "C", "3")],
        id="a repeated section keeps file order in the option list",
    ),
    pytest.param(
        "[Unit]\nA=\nB= \n",
        [("Unit", "A", ""), ("Unit", "B", "")],
        id="empty values",
    ),
    pytest.param("", [], id="empty text has no options"),
    pytest.param("[Unit]\n[Service]\n", [], id="sections without options produce nothing"),
    pytest.param("[Unit]   \t\nA=b", [("Unit", "A", "b")], id="whitespace after a section name is allowed"),
    pytest.param("[ Unit ]\nA=b\n", [(" Unit ", "A", "b")], id="a section name is kept verbatim"),
    pytest.param(
        "[Unit]\n" + "Description=" + "x" * (LINE_MAX - 1 - len("Description=")) + "\n",
        [("Unit", "Description", "x" * (LINE_MAX - 1 - len("Description=")))],
        id="a 2047-byte line passes",
    ),
    pytest.param(
        "[Unit]\n# c\\\n" + "x" * 3000 + "\nA=b\n",
        [("Unit", "A", "b")],
        id="a long line swallowed by a comment continuation is not checked",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert triples(text) == expected


NEWLINE_IN_NAME = "unexpected newline encountered while parsing option name"
ERRORS = [
    pytest.param("\n[Unit]\n\n[Service]\n<<<<<<<<<<<<<<<<\n", NEWLINE_IN_NAME, 5,
                 id="bad unit: an option line without equals sign"),
    pytest.param("\n[Unit]\nnonsense upon stilts\n", NEWLINE_IN_NAME, 3, id="bad unit: nonsense upon stilts"),
    pytest.param("[Unit]\nnonsense", "unexpected end of file while parsing option name", 2,
                 id="end of file inside an option name"),
    pytest.param("[Unit]\nName\r=x\n", NEWLINE_IN_NAME, 2,
                 id="a carriage return inside an option name"),
    pytest.param("[Unit\nA=b\n", "unable to find end of section", 1, id="a section without closing bracket"),
    pytest.param("[Unit]\nA=b\n[Service] trailing\n", 'found garbage after section name Service: "trailing"',
                 3, id="garbage after a section name"),
    pytest.param("[Unit]\n" + "Description=" + "x" * LINE_MAX + "\n", "line too long (max 2048 bytes)", 2,
                 id="a line of more than 2048 bytes"),
    pytest.param("[Unit]\nA=" + "x" * (LINE_MAX - 2), "line too long (max 2048 bytes)", 2,
                 id="a 2048-byte last line without newline"),
    pytest.param("[Unit]\n" + "D=" + "é" * 1024 + "\n", "line too long (max 2048 bytes)", 2,
                 id="line length counts UTF-8 bytes, not characters"),
    pytest.param("[Unit]\nA=one\\\n" + "y" * 2100 + "\n", "line too long (max 2048 bytes)", 3,
                 id="a too-long continuation line"),
    pytest.param("x" * 3000 + "\n[Unit]\n", "line too long (max 2048 bytes)", 1,
                 id="a too-long line of garbage before the first section"),
    pytest.param("[Unit]\n\rA=" + "x" * 3000 + "\n", "line too long (max 2048 bytes)", 2,
                 id="a carriage return does not end a line for the length check"),
    pytest.param("[Service]\nA=one\\", "A: the backslash at the end of the file continues nothing; remove it"
                 " or add the next line", 2, id="a backslash at the end of the file"),
    pytest.param("[Service]\nA=one\\ \nB=two\n", "A: whitespace after the final backslash stops it"
                 " continuing the line; remove the backslash or the whitespace after it (a CRLF file: save it"
                 " with LF line ends)", 2, id="a backslash followed by whitespace"),
    pytest.param("[Service]\r\nA=one\\\r\nB=two\r\n", "A: whitespace after the final backslash stops it"
                 " continuing the line; remove the backslash or the whitespace after it (a CRLF file: save it"
                 " with LF line ends)", 2, id="a backslash before a CRLF line end"),
    pytest.param("[Service]\nA=one\\\ntwo\\", "A: the backslash at the end of the file continues nothing;"
                 " remove it or add the next line", 2,
                 id="a continuation line ending the file in a backslash"),
]


@pytest.mark.parametrize(("text", "message", "line"), ERRORS)
def test_parse_errors(text: str, message: str, line: int) -> None:
    with pytest.raises(UnitFileError) as info:
        parse(text)
    assert (info.value.msg, info.value.line) == (message, line)


def test_options_carry_their_line_numbers() -> None:
    options = parse("# header\n[Unit]\nDescription=x\n\n[Service]\nExecStart=a\\\n  b\nExecStop=c\n")
    assert [(o.name, o.line) for o in options] == [("Description", 3), ("ExecStart", 6), ("ExecStop", 8)]


def test_line_numbers_are_not_part_of_option_equality() -> None:
    assert UnitOption("Unit", "A", "b", 1) == UnitOption("Unit", "A", "b", 7)


def test_parse_is_fast_enough_for_engine_start_up() -> None:
    unit = "[Unit]\nDescription=web %d\n\n[Service]\nExecStart=/bin/sleep 100\n\n[X-Fleet]\nConflicts=web*\n"
    total = sum(len(parse(unit % i)) for i in range(10_000))
    assert total == 30_000


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from("[]=#;\\ \t\r\nab\"é"), max_size=80) | st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_unit_file_error(text: str) -> None:
    try:
        options = parse(text)
    except UnitFileError as err:
        assert err.line is not None and err.line >= 1
    else:
        assert all(o.line >= 1 for o in options)


# Texts shaped like canonical forms, with the characters that make the lexer do something else mixed in:
# whatever the split-by-lines reading accepts, the lexer must read the same way (lines included).
_PIECES = st.sampled_from(["a", "b", "=", "[", "]", "#", ";", " ", "\t", "\x0b", "\x85", "\u2028", "é", '"'])
_WORDS = st.lists(_PIECES, max_size=4).map("".join)
_SPACE = st.sampled_from(["", "", " ", "\t", "\x85", "\u3000"])
_OPTIONS = st.tuples(_SPACE, _WORDS, _SPACE, _SPACE, _WORDS, _SPACE).map(
    lambda p: "{}a{}{}={}{}{}".format(*p)
)
_LINES = _WORDS | _OPTIONS | st.sampled_from(["[Unit]", "[X-Fleet]", "", "A=b", "A=", "[a] ", "[a]]"])
_SIMPLE_SHAPED = st.lists(_LINES, min_size=1, max_size=8).map(lambda lines: "[Unit]\n" + "\n".join(lines))


def _lexed(text: str) -> list[tuple[str, str, str, int]] | str:
    try:
        return [(o.section, o.name, o.value, o.line) for o in _Lexer(text).run()]
    except UnitFileError as err:
        return f"error at line {err.line}"


@settings(max_examples=1000)
@given(_SIMPLE_SHAPED | st.text(max_size=60).map(lambda text: "[" + text))
def test_the_split_reading_of_plain_texts_agrees_with_the_lexer(text: str) -> None:
    simple = _simple(text)
    if simple is not None:
        assert [(o.section, o.name, o.value, o.line) for o in simple] == _lexed(text)


@pytest.mark.parametrize("text", [
    "[Unit]\n#a=b\n", "[Unit]\n;a=b", "[Unit]\na=b \n", "[Unit]\na =b\n", "[Unit]\n a=b\n",
    "[Unit]\na= b\n", "[Unit]\n[a]]\n", "[Unit]\n[a] \n", "[Unit]\na=b\\\nc\n", "[Unit]\r\na=b\r\n",
])  # fmt: skip
def test_texts_the_split_reading_would_misread_go_to_the_lexer(text: str) -> None:
    simple = _simple(text)
    assert simple is None or [(o.section, o.name, o.value, o.line) for o in simple] == _lexed(text)


def test_canonical_forms_take_the_split_reading() -> None:
    text = "[Unit]\nDescription=a b\n\n[Service]\nExecStart=/bin/sleep 1\nEmpty=\n\n[X-Fleet]\nGlobal=true\n"
    assert _simple(text) is not None
    assert _simple(text) == _Lexer(text).run()
