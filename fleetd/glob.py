"""Glob patterns with Go ``path.Match`` semantics, as fleet uses them for Conflicts and Replaces.

``*`` matches any run of characters except ``/``; ``?`` one character except ``/``; ``[...]`` a class
(``^`` negates, ``a-z`` ranges, ``\\`` escapes inside); ``\\`` escapes the next character. A malformed
pattern matches nothing (``is_valid`` tells whether it is well formed).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["has_magic", "is_valid", "match"]

_NEVER = re.compile(r"(?!)")


def has_magic(pattern: str) -> bool:
    """True when ``pattern`` contains a glob metacharacter (so it is not a plain name)."""
    return any(c in pattern for c in "*?[\\")


def match(pattern: str, name: str) -> bool:
    """True when ``name`` matches ``pattern`` entirely."""
    return _compile(pattern).fullmatch(name) is not None


def is_valid(pattern: str) -> bool:
    return _compile(pattern) is not _NEVER


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                return _NEVER
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            parsed = _class(pattern, i + 1)
            if parsed is None:
                return _NEVER
            regex, i = parsed
            out.append(regex)
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def _class(pattern: str, i: int) -> tuple[str, int] | None:
    """Translate a character class starting after ``[``; returns (regex, index after ``]``)."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    first = True
    while True:
        if i >= n:
            return None
        if pattern[i] == "]" and not first:
            i += 1
            break
        first = False
        lo, i = _class_char(pattern, i)
        if lo is None:
            return None
        hi = lo
        if i < n and pattern[i] == "-":
            upper, i = _class_char(pattern, i + 1)
            if upper is None or upper < lo:
                return None
            hi = upper
        ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    body = "".join(ranges)
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        if i + 1 >= n:
            return None, i
        return pattern[i + 1], i + 2
    return pattern[i], i + 1
