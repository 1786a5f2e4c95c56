"""Glob patterns with Go ``path.Match`` semantics, as fleet uses them for Conflicts and Replaces (pure).

``*`` matches any run of characters except ``/``; ``?`` one character except ``/``; ``[...]`` a class
(``^`` negates, ``a-z`` ranges, ``\\`` escapes inside; a class may match ``/``); ``\\`` escapes the next
character. A malformed pattern (trailing ``\\``, unclosed ``[``, empty class, a ``-`` or ``]`` where a class
character belongs) matches nothing; ``is_valid`` tells. A reversed range such as ``[z-a]`` is well formed and
contains nothing, as in Go.

Matching follows Go's algorithm, not a regex's: the pattern is cut at stars into chunks of single-character
terms; each chunk is placed at the leftmost start its star can reach (a star never crosses ``/``) and is never
moved again; the last chunk must end the name. The two differ only where a class matches a ``/``: Go's
``*[^x]*b`` does not match ``za/b``. Unit names contain no ``/``.

Cost: there is no backtracking. A chunk is searched with the bit-parallel shift-and method, one step per
character of the name whatever the chunk's length, and each search starts where the previous chunk ended, so
a match takes O(len(name)) steps (each a dict lookup and a binary search over the class bounds) after the
pattern is compiled once. Any pattern, however hostile, is cheap to match. ``MAX_PATTERN_LENGTH`` and
``MAX_STARS`` are the policy for patterns in submitted unit files (``pattern_problem``), not what keeps
matching fast.

Go compares UTF-8 bytes, this compares code points: they differ only when Go's star stops inside a
multi-byte character (Go's ``*??`` matches ``☺``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["MAX_PATTERN_LENGTH", "MAX_STARS", "has_magic", "is_valid", "match", "pattern_problem"]

MAX_PATTERN_LENGTH = 256
MAX_STARS = 16


def has_magic(pattern: str) -> bool:
    """True when ``pattern`` contains a glob metacharacter (so it is not a plain name)."""
    return "*" in pattern or "?" in pattern or "[" in pattern or "\\" in pattern


def match(pattern: str, name: str) -> bool:
    """True when ``name`` matches ``pattern`` entirely; False for a malformed pattern. Never raises."""
    compiled = _load(pattern)
    if compiled is None:
        return False
    if compiled.parts is not None and "/" not in name:
        return _match_parts(compiled.parts, name)
    return _match(compiled.chunks, name)


def is_valid(pattern: str) -> bool:
    return _load(pattern) is not None


def pattern_problem(pattern: str) -> str | None:
    """What is wrong with ``pattern`` as a glob in a unit file (a predicate: "is malformed"), or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"is longer than {MAX_PATTERN_LENGTH} characters"
    compiled = _load(pattern)
    if compiled is None:
        return "is malformed"
    if compiled.stars > MAX_STARS:
        return f'has more than {MAX_STARS} "*"'
    return None


@dataclass(frozen=True, slots=True)
class _Class:
    negated: bool
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges as written: may overlap or be reversed


_Term = str | None | _Class  # a literal character, "?" (None) or a class


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A leading star (or none, at the start of the pattern) and the terms up to the next star.

    The terms are kept as bit masks, bit j for term j, so ``terms_matching`` answers for all terms at once.
    """

    star: bool
    length: int
    literals: Mapping[str, int]  # character -> the literal terms that are that character
    any_char: int  # the "?" terms
    negated: int  # the "[^...]" terms
    bounds: tuple[int, ...]  # code points where the set of classes containing a character changes
    inside: tuple[int, ...]  # the classes containing the code points from bounds[k] to bounds[k + 1] - 1

    def terms_matching(self, char: str) -> int:
        found = self.literals.get(char, 0)
        if char != "/":
            found |= self.any_char
        k = bisect_right(self.bounds, ord(char)) - 1
        return found | ((self.inside[k] if k >= 0 else 0) ^ self.negated)


@dataclass(frozen=True, slots=True)
class _Pattern:
    chunks: tuple[_Chunk, ...]
    stars: int  # "*" characters that are wildcards (not escaped, not in a class)
    parts: tuple[str, ...] | None  # the text between stars, when the only metacharacter is "*"


def _match_parts(parts: tuple[str, ...], name: str) -> bool:
    """``_match`` for a pattern of literal text and stars, and a name without "/": each part between stars
    at its leftmost place (string searches instead of shift-and; the same answer)."""
    head, tail = parts[0], parts[-1]
    if len(parts) == 1:
        return name == head
    if len(name) < len(head) + len(tail) or not name.startswith(head) or not name.endswith(tail):
        return False
    pos, end = len(head), len(name) - len(tail)
    for part in parts[1:-1]:
        found = name.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def _match(chunks: tuple[_Chunk, ...], name: str) -> bool:
    pos, size = 0, len(name)
    for index, chunk in enumerate(chunks):
        latest = size - chunk.length  # the last start that leaves room for the chunk
        earliest = pos
        if chunk.star:
            slash = name.find("/", pos)
            if chunk.length == 0:  # a trailing star takes the rest of the name unless it holds a "/"
                return slash < 0
            if slash >= 0:
                latest = min(latest, slash)  # the star cannot skip the "/"
            if index == len(chunks) - 1:
                earliest = max(pos, latest)  # the last chunk must end the name
        else:
            latest = min(latest, pos)
        start = _leftmost(chunk, name, earliest, latest)
        if start is None:
            return False
        pos = start + chunk.length
    return pos == size


def _leftmost(chunk: _Chunk, name: str, earliest: int, latest: int) -> int | None:
    """The first start in [earliest, latest] where ``chunk`` matches ``name``, by shift-and.

    After reading ``name[end]``, bit j of ``state`` is set when terms 0..j match the j + 1 characters ending
    there; a new candidate start enters as bit 0 while starts are still allowed. Requires latest + length <=
    len(name).
    """
    if latest < earliest:
        return None
    done = 1 << (chunk.length - 1)
    state = 0
    for end in range(earliest, latest + chunk.length):
        state = ((state << 1) | int(end <= latest)) & chunk.terms_matching(name[end])
        if state & done:
            return end - chunk.length + 1
    return None


# Longer patterns are compiled on every use rather than cached, so that no pattern can pin much memory. Unit
# files keep patterns within MAX_PATTERN_LENGTH, but expanding %n and friends for a unit name lengthens them.
_CACHED_LENGTH = 4096


def _load(pattern: str) -> _Pattern | None:
    return _compile(pattern) if len(pattern) <= _CACHED_LENGTH else _parse(pattern)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Pattern | None:
    return _parse(pattern)


def _parse(pattern: str) -> _Pattern | None:
    """Cut ``pattern`` into chunks at its stars (runs of stars count as one); None when malformed."""
    chunks: list[_Chunk] = []
    terms: list[_Term] = []
    star, stars = False, 0
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "*":
            stars += 1
            if terms:
                chunks.append(_chunk(star, terms))
                terms = []
            star = True
            i += 1
        elif char == "?":
            terms.append(None)
            i += 1
        elif char == "[":
            parsed = _parse_class(pattern, i + 1)
            if parsed is None:
                return None
            term, i = parsed
            terms.append(term)
        else:
            if char == "\\":
                i += 1
                if i == size:
                    return None
            terms.append(pattern[i])
            i += 1
    if star or terms:
        chunks.append(_chunk(star, terms))
    parts = None if any(c in pattern for c in "?[\\") else tuple(pattern.split("*"))
    return _Pattern(tuple(chunks), stars, parts)


def _parse_class(pattern: str, i: int) -> tuple[_Class, int] | None:
    """The class whose ``[`` is just before ``i`` and the index after its ``]``; None when malformed."""
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    while not (ranges and pattern.startswith("]", i)):
        low = _class_char(pattern, i)
        if low is None:
            return None
        lo, i = low
        hi = lo
        if pattern.startswith("-", i):
            high = _class_char(pattern, i + 1)
            if high is None:
                return None
            hi, i = high
        ranges.append((ord(lo), ord(hi)))
    return _Class(negated, tuple(ranges)), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int] | None:
    """The possibly escaped class character at ``i`` and the index after it; None when malformed.

    ``-`` and ``]`` must be escaped, and a character must follow (the class is unclosed otherwise).
    """
    if i >= len(pattern) or pattern[i] in "-]":
        return None
    if pattern[i] == "\\":
        i += 1
    if i + 1 >= len(pattern):
        return None
    return pattern[i], i + 1


def _chunk(star: bool, terms: list[_Term]) -> _Chunk:
    literals: dict[str, int] = {}
    any_char = negated = 0
    toggles: dict[int, int] = {}  # code point -> the classes that start or stop containing it
    for j, term in enumerate(terms):
        bit = 1 << j
        if term is None:
            any_char |= bit
        elif isinstance(term, str):
            literals[term] = literals.get(term, 0) | bit
        else:
            if term.negated:
                negated |= bit
            for lo, hi in _disjoint(term.ranges):
                toggles[lo] = toggles.get(lo, 0) ^ bit
                toggles[hi + 1] = toggles.get(hi + 1, 0) ^ bit
    bounds = tuple(sorted(toggles))
    inside: list[int] = []
    current = 0
    for point in bounds:
        current ^= toggles[point]
        inside.append(current)
    return _Chunk(star, len(terms), literals, any_char, negated, bounds, tuple(inside))


def _disjoint(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """The same code points as non-overlapping ranges in order (reversed ranges hold none)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
