"""Unit-file lexer: text -> ordered (section, name, value) options with line numbers (pure).

Behaviour follows the lexer fleet uses (go-systemd ``unit/deserialize.go``), quirks included:

- Before the first section everything is skipped up to a ``[``; a ``#``/``;`` there ignores the
  rest of its line.
- ``[name]`` starts a section (the name may hold any character but ``]``); only whitespace may
  follow on its line.
- In a section, whitespace and blank lines are skipped; a line starting with ``#``/``;`` is a
  comment, and a comment whose line ends in ``\\`` (after dropping one trailing space) also
  swallows the next line.
- ``Name = value``: the name is everything before ``=``, trimmed. The value is the rest of the
  line; a line whose last character is ``\\`` continues the value (the backslash and a newline
  are kept) until a line without a trailing backslash or a whitespace-only line. The value is
  trimmed, except that a value ending in a newline keeps one.
- Lines end at ``\\n``; a trailing ``\\r`` is removed only on a last line without ``\\n`` (CRLF
  values lose their ``\\r`` to trimming, and CRLF breaks continuations). Quotes are not
  interpreted; duplicate keys are all kept.
- A line of 2048 bytes or more (counted up to its ``\\n``) is an error, as systemd would truncate
  it. Lines swallowed by a comment continuation are not checked, as in the original.

The canonical form (``unit.serialize``: ``[Section]``, then ``Name=Value`` lines) must parse back to
the same options, or a unit's hash would change once it is stored and every agent would reload it on
every pass. Each option, section and line of the canonical form is its source with whitespace trimmed,
so it re-parses the same way, except in two cases the original accepts and which are rejected here:

- a value whose last character is a backslash (a backslash at the end of the file, or one followed by
  trailing whitespace or the ``\\r`` of a CRLF line end): written as ``Name=Value\\n`` it would
  continue into the next line. A value ending in backslash-newline (a continuation ended by a blank
  line) is fine: its canonical form is followed by a blank line again.
- a long line that only passed because the original counted its length up to a ``\\r``: trimming a
  leading ``\\r`` would make its canonical line too long (so length is counted up to ``\\n``).

Everything else (empty names and values, ``#``/``;``/``[`` at the start of continuation lines, ``\\r``
inside values, section names holding ``[``, ``=``, ``#`` or newlines, NUL, any Unicode) re-parses to
the same options; repeated sections come back merged, in the canonical order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fleetd.errors import UnitFileError

__all__ = ["LINE_MAX", "UnitOption", "go_quote", "parse"]

LINE_MAX = 2048

# Go's unicode.IsSpace (the White_Space property); str.isspace() differs (it includes \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u2028\u2029\u202f\u205f\u3000"

_PRE_SECTION = re.compile(r"[\[#;]")
# A UTF-8 character is at most 4 bytes, so a line of LINE_MAX bytes has at least LINE_MAX // 4 characters.
# The original stops counting at a \r too; then a line starting with "\r" is never too long, but its
# canonical form (the \r trimmed) is: count up to \n so that a line accepted once is accepted again.
_MAYBE_LONG = re.compile(r"(?m)^[^\n]{" + str(LINE_MAX // 4) + ",}")


@dataclass(frozen=True, slots=True)
class UnitOption:
    """One ``Name=Value`` of a section. ``line`` (1-based, 0 when unknown) is not part of equality."""

    section: str
    name: str
    value: str
    line: int = field(default=0, compare=False)


def parse(text: str) -> tuple[UnitOption, ...]:
    """Lex unit-file text into options in file order.

    Raises UnitFileError carrying the 1-based line of the problem.
    """
    simple = _simple(text)
    return simple if simple is not None else _Lexer(text).run()


_SIMPLE_LINE = LINE_MAX // 4  # characters: a shorter line is shorter than LINE_MAX bytes


def _simple(text: str) -> tuple[UnitOption, ...] | None:
    """The options of a text in the plain shape canonical forms have (every body stored in the registry):
    a section first, then only ``[Section]`` lines, ``Name=Value`` lines without surrounding whitespace,
    comments, continuations or carriage returns, and empty lines; what the lexer gives for it, found by
    splitting lines. None for any other text (the lexer reads it)."""
    if not text.startswith("[") or "\\" in text or "\r" in text:
        return None
    options: list[UnitOption] = []
    section = ""
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if len(line) >= _SIMPLE_LINE or line[0] in GO_SPACE or line[-1] in GO_SPACE:
            return None
        if line[0] == "[":
            if line[-1] != "]" or "]" in line[1:-1]:
                return None
            section = line[1:-1]
            continue
        equals = line.find("=")
        if equals < 0 or line[0] in "#;":
            return None
        name, value = line[:equals], line[equals + 1 :]
        if (name and name[-1] in GO_SPACE) or (value and value[0] in GO_SPACE):
            return None
        options.append(UnitOption(section, name, value, number))
    return tuple(options)


class _Lexer:
    __slots__ = ("_long_starts", "line", "options", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.options: list[UnitOption] = []
        self._long_starts = _long_line_starts(text)

    def run(self) -> tuple[UnitOption, ...]:
        section: str | None = None
        text, n = self.text, len(self.text)
        while self.pos < n:
            self._check_length()
            start = self.pos
            eol = text.find("\n", start)
            end = n if eol < 0 else eol
            if section is None:
                match = _PRE_SECTION.search(text, start, end)
                if match is None:
                    self._next_line(end)
                    continue
                at = match.start()
                if text[at] != "[":
                    self._skip_comment(at + 1)
                    continue
            else:
                at = start
                while at < end and text[at] in GO_SPACE:
                    at += 1
                if at == end:
                    self._next_line(end)
                    continue
                char = text[at]
                if char in "#;":
                    self._skip_comment(at + 1)
                    continue
                if char != "[":
                    self._option(section, at, end, eol < 0)
                    continue
            section = self._section_header(at)
        return tuple(self.options)

    # -- steps ---------------------------------------------------------------------------------------

    def _next_line(self, end: int) -> None:
        """Move past the line ending at ``end`` (the index of its newline, or the end of the text)."""
        self.pos = end + 1
        if end < len(self.text):
            self.line += 1

    def _to_eol(self, start: int) -> tuple[str, bool]:
        """Read from ``start`` to the end of the line; returns (line without its terminator, reached EOF)."""
        text = self.text
        eol = text.find("\n", start)
        if eol < 0:
            self.pos = len(text)
            return text[start:].removesuffix("\r"), True
        self.pos = eol + 1
        self.line += 1
        return text[start:eol], False

    def _skip_comment(self, start: int) -> None:
        line, eof = self._to_eol(start)
        while not eof and line.removesuffix(" ").endswith("\\"):
            line, eof = self._to_eol(self.pos)

    def _section_header(self, bracket: int) -> str:
        text = self.text
        close = text.find("]", bracket + 1)
        if close < 0:
            raise UnitFileError("unable to find end of section", self.line)
        name = text[bracket + 1 : close]
        self.line += name.count("\n")
        line = self.line
        garbage = self._to_eol(close + 1)[0].strip(GO_SPACE)
        if garbage:
            raise UnitFileError(f"found garbage after section name {name}: {go_quote(garbage)}", line)
        return name

    def _option(self, section: str, start: int, end: int, at_eof: bool) -> None:
        text = self.text
        equals = text.find("=", start, end)
        stop = end if equals < 0 else equals
        if text.find("\r", start, stop) >= 0 or (equals < 0 and not at_eof):
            raise UnitFileError("unexpected newline encountered while parsing option name", self.line)
        if equals < 0:
            raise UnitFileError("unexpected end of file while parsing option name", self.line)
        name = text[start:equals].strip(GO_SPACE)
        line_no = self.line
        parts: list[str] = []
        line, eof = self._to_eol(equals + 1)
        while line.strip(GO_SPACE):
            parts.append(line)
            if not line.endswith("\\"):
                break
            if not eof:
                parts.append("\n")
            self._check_length()
            line, eof = self._to_eol(self.pos)
        raw = "".join(parts)
        value = raw.strip(GO_SPACE) + "\n" if raw.endswith("\n") else raw.strip(GO_SPACE)
        if value.endswith("\\"):
            raise UnitFileError(_dangling_backslash(name, raw), line_no)
        self.options.append(UnitOption(section, name, value, line_no))

    def _check_length(self) -> None:
        if self._long_starts and self.pos in self._long_starts:
            raise UnitFileError(f"line too long (max {LINE_MAX} bytes)", self.line)


def _dangling_backslash(name: str, raw: str) -> str:
    """Why a value may not end in a backslash (see the module docstring), and what to do about it."""
    if raw.endswith("\\"):
        return f"{name}: the backslash at the end of the file continues nothing; remove it or add the next" \
            " line"
    return (f"{name}: whitespace after the final backslash stops it continuing the line; remove the backslash"
            " or the whitespace after it (a CRLF file: save it with LF line ends)")


def _long_line_starts(text: str) -> frozenset[int]:
    """Offsets of line starts whose content up to its LF is at least LINE_MAX bytes of UTF-8."""
    starts = [
        match.start()
        for match in _MAYBE_LONG.finditer(text)
        if len(match.group().encode("utf-8", "surrogatepass")) >= LINE_MAX
    ]
    return frozenset(starts)


def go_quote(text: str) -> str:
    """Double-quote ``text`` as Go's %q does: escapes for quotes, backslashes and non-printable characters."""
    return '"' + "".join(_go_escape(char) for char in text) + '"'


_SHORT_ESCAPES = {
    '"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
    "\t": "\\t", "\v": "\\v",
}


def _go_escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
