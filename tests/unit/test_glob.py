"""Glob matching: Go path.Match's documented cases, a slow reference, validity, limits and cost."""

from __future__ import annotations

import random
import re
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd import glob as glob_module
from fleetd.glob import MAX_PATTERN_LENGTH, MAX_STARS, has_magic, is_valid, match, pattern_problem

GO_CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]

MORE_CASES = [
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("**", "a", True),
    ("*", "a/b", False),
    ("a**b", "axxb", True),
    ("[*]", "*", True),
    ("[*]", "a", False),
    ("[[]", "[", True),
    ("[^^]", "^", False),
    ("[z-a]", "m", False),
    ("[^z-a]", "m", True),
    ("[a-cx-z]", "y", True),
    ("[a-cb-d]", "d", True),
    ("[a-cc-e]", "c", True),
    ("[^a-cb-d]", "d", False),
    ("\\a", "a", True),
    ("a]", "a]", True),
    ("foo@*.service", "foo@1.service", True),
    ("foo@*.service", "foo@.service", True),
    ("foo*.service", "foo.socket", False),
    # A class matches "/" in Go, and a placed chunk is never moved: Go reports no match where a regex would.
    ("[^x]", "/", True),
    ("a[/]b", "a/b", True),
    ("*[^x]*b", "za/b", False),
    ("*[^x]b", "za/b", True),
]

GO_INVALID = ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a/b[", "[\\",
              "[^]", "[a-", "[a-\\", "[a\\"]


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_CASES + MORE_CASES,
                         ids=[f"{p!r} vs {n!r}" for p, n, _ in GO_CASES + MORE_CASES])
def test_match(pattern: str, name: str, expected: bool) -> None:
    assert is_valid(pattern)
    assert pattern_problem(pattern) is None
    assert match(pattern, name) is expected


@pytest.mark.parametrize("pattern", GO_INVALID)
def test_malformed_patterns_match_nothing(pattern: str) -> None:
    assert not is_valid(pattern)
    assert pattern_problem(pattern) == "is malformed"
    for name in ("", "a", "x", "]", "-", "[", "\\", pattern):
        assert match(pattern, name) is False


@pytest.mark.parametrize(("pattern", "magic"), [
    ("foo.service", False), ("foo*", True), ("fo?", True), ("[f]oo", True), ("foo\\.service", True),
])
def test_has_magic(pattern: str, magic: bool) -> None:
    assert has_magic(pattern) is magic


@pytest.mark.parametrize(("pattern", "problem"), [
    ("a" * MAX_PATTERN_LENGTH, None),
    ("a" * (MAX_PATTERN_LENGTH + 1), f"is longer than {MAX_PATTERN_LENGTH} characters"),
    ("*a" * MAX_STARS, None),
    ("*a" * (MAX_STARS + 1), f'has more than {MAX_STARS} "*"'),
    ("\\*a" * (MAX_STARS + 1), None),
    ("[*]a" * (MAX_STARS + 1), None),
    ("a[", "is malformed"),
])
def test_pattern_problem(pattern: str, problem: str | None) -> None:
    assert pattern_problem(pattern) == problem


# The reference: Go's grammar translated to a Python regex. A regex backtracks, which is harmless on the tiny
# inputs below and is the point: it searches every way to match. It agrees with Go's algorithm unless a class
# meets a "/" in the name (Go places each chunk once; see MORE_CASES).
_CLASS_CHAR = r"(?:\\.|[^\\\-\]])"
_CLASS = re.compile(rf"\[(\^?+)((?:{_CLASS_CHAR}(?:-{_CLASS_CHAR})?)+)\]", re.DOTALL)
_RANGE = re.compile(rf"({_CLASS_CHAR})(?:-({_CLASS_CHAR}))?", re.DOTALL)


def reference(pattern: str) -> re.Pattern[str] | None:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            found = _CLASS.match(pattern, i)
            if found is None:
                return None
            out.append(_reference_class(found.group(1) == "^", found.group(2)))
            i = found.end()
            continue
        if char == "\\":
            if i + 1 == len(pattern):
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char) or re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _reference_class(negated: bool, body: str) -> str:
    members = []
    for low, high in _RANGE.findall(body):
        lo, hi = low[-1], (high or low)[-1]
        if lo <= hi:
            members.append(re.escape(lo) + "-" + re.escape(hi))
    if not members:
        return "(?s:.)" if negated else "(?!)"
    return ("[^" if negated else "[") + "".join(members) + "]"


RAW_PATTERNS = st.text(alphabet="ab/*?[]^-\\", max_size=10)
TERMS = ["a", "b", "/", "*", "?", "[ab]", "[^a]", "[a-b]", "[b-a]", "[a-bb]",
         "\\*", "\\[", "[\\]]", "[/]", "[^/]", "[*]"]
PATTERNS = st.lists(st.sampled_from(TERMS), max_size=8).map("".join)
NAMES = st.text(alphabet="ab/*[]", max_size=10)


@settings(max_examples=500)
@given(RAW_PATTERNS | PATTERNS, NAMES)
def test_matches_the_reference(pattern: str, name: str) -> None:
    compiled = reference(pattern)
    assert is_valid(pattern) is (compiled is not None)
    if "/" not in name or "[" not in pattern:
        assert match(pattern, name) is (compiled is not None and compiled.fullmatch(name) is not None)


STAR_PATTERNS = st.text(alphabet="ab*", max_size=12)
PLAIN_NAMES = st.text(alphabet="ab", max_size=14)


@settings(max_examples=1000)
@given(STAR_PATTERNS, PLAIN_NAMES)
def test_literal_and_star_patterns_take_the_string_search_path_with_the_same_answer(
    pattern: str, name: str
) -> None:
    compiled = reference(pattern)
    assert compiled is not None
    assert match(pattern, name) is (compiled.fullmatch(name) is not None)


@given(st.text(max_size=40), st.text(max_size=40))
def test_match_is_total(pattern: str, name: str) -> None:
    assert isinstance(match(pattern, name), bool)
    assert pattern_problem(pattern) in {None, "is malformed", f'has more than {MAX_STARS} "*"'}


def _random_pattern(rng: random.Random) -> str:
    pieces = ["a", "b", "?", "[ab]", "[^b]", "[a-c]", "\\*", "/", "ab", "aab"]
    out = ""
    stars = 0
    while len(out) < MAX_PATTERN_LENGTH - 8:
        if stars < MAX_STARS and rng.random() < 0.3:
            out += "*"
            stars += 1
        out += rng.choice(pieces)
        if rng.random() < 0.02:
            break
    return out + "b"


def _steps(pairs: list[tuple[str, str]]) -> tuple[list[bool], list[int]]:
    """Match each (pattern, name), counting the matcher's steps (one per character examined)."""
    counted = 0
    original = glob_module._Chunk.terms_matching

    def counting(self: glob_module._Chunk, char: str) -> int:
        nonlocal counted
        counted += 1
        return original(self, char)

    results, steps = [], []
    with mock.patch.object(glob_module._Chunk, "terms_matching", counting):
        for pattern, name in pairs:
            counted = 0
            results.append(match(pattern, name))
            steps.append(counted)
    return results, steps


def test_hostile_patterns_match_in_linear_steps() -> None:
    """No backtracking: a match examines each character of the name at most once per chunk start, so
    the steps stay within len(name) + len(pattern) whatever the pattern (counted, not timed)."""
    rng = random.Random(1)
    adversarial = [("*a" * 10 + "*b", "a" * 250), ("*" + "a" * 200 + "b", "a" * 256),
                   ("*?" * MAX_STARS + "b", "a" * 256), ("*[^b]" * MAX_STARS + "b", "a" * 256)]
    batch = adversarial + [
        (_random_pattern(rng), "".join(rng.choice("aab/") for _ in range(256))) for _ in range(1000)
    ]
    assert all(pattern_problem(pattern) is None for pattern, _ in batch)
    results, steps = _steps(batch)
    assert results[:4] == [False, False, False, False]
    assert all(n <= len(name) + len(pattern) for n, (pattern, name) in zip(steps, batch, strict=True))
    assert max(steps) > 0  # the counting reached the matcher


def test_patterns_beyond_the_limits_still_match_in_linear_steps() -> None:
    pairs = [("*a" * 5000 + "*b", "a" * 250), ("*a" * 100 + "*", "a" * 250), ("?" * 20000, "a" * 20000)]
    results, steps = _steps(pairs)
    assert results == [False, True, True]
    assert all(n <= len(name) + len(pattern) for n, (pattern, name) in zip(steps, pairs, strict=True))
