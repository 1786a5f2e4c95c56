"""[X-Fleet] requirements: fleet's job_test.go tables and api.ValidateOptions messages."""

from __future__ import annotations

import pytest

from fleetd.errors import UnitFileError
from fleetd.model import Requirements
from fleetd.unitfile.requirements import (
    expand_specifiers,
    expanded_requirements,
    requirement_problems,
    requirements_for,
    unknown_key_warnings,
    unknown_keys,
    validate_requirements,
)
from fleetd.unitfile.unit import UnitFile


def fleet(body: str) -> UnitFile:
    return UnitFile.from_text("[X-Fleet]\n" + body)


def reqs(body: str, name: str = "test.service") -> Requirements:
    return requirements_for(fleet(body), name)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("", (), id="peers: none"),
        pytest.param('MachineOf="lol.service"\n', ("lol.service",), id="peers: one quoted"),
        pytest.param('MachineOf="foo.service" "bar.service"\n', ("foo.service", "bar.service"),
                     id="peers: two quoted values"),
        pytest.param("MachineOf=a.service\nX-ConditionMachineOf=b.service\n", ("a.service", "b.service"),
                     id="peers: deprecated alias merges in file order"),
        pytest.param("MachineOf=a.service b.service\n", ("a.service b.service",),
                     id="peers: no whitespace splitting"),
    ],
)
def test_peers(body: str, expected: tuple[str, ...]) -> None:
    assert reqs(body).peers == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("Conflicts=*bar*\n", ("*bar*",), id="conflicts: one pattern"),
        pytest.param("Conflicts=*bar* *foo*\n", ("*bar*", "*foo*"), id="conflicts: split on whitespace"),
        pytest.param("Conflicts=*bar*\nConflicts=*foo*\n", ("*bar*", "*foo*"), id="conflicts: two lines"),
        pytest.param("X-Conflicts=*bar*\nConflicts=*foo*\n", ("*bar*", "*foo*"),
                     id="conflicts: deprecated alias"),
        pytest.param('Conflicts="a*  b*" "c*"\n', ("a*", "b*", "c*"), id="conflicts: quoted then split"),
        pytest.param("Conflicts=\n", (), id="conflicts: empty value gives no pattern"),
    ],
)
def test_conflicts(body: str, expected: tuple[str, ...]) -> None:
    assert reqs(body).conflicts == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("Replaces=*bar*\n", ("*bar*",), id="replaces: one pattern"),
        pytest.param("Replaces=a* b*\n", ("a* b*",), id="replaces: no whitespace splitting"),
        pytest.param('Replaces="a*" "b*"\n', ("a*", "b*"), id="replaces: quoted values"),
    ],
)
def test_replaces(body: str, expected: tuple[str, ...]) -> None:
    assert reqs(body).replaces == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[X-Fleet]\n", {}, id="requirements: empty section"),
        pytest.param("[X-Fleet]\nFoo=bar\n", {"Foo": ["bar"]}, id="requirements: unknown key kept"),
        pytest.param("[X-Fleet]\nX-Foo=bar\nX-ConditionFoo=baz\n",
                     {"X-Foo": ["bar"], "X-ConditionFoo": ["baz"]},
                     id="requirements: X- prefixed keys kept verbatim"),
        pytest.param("[X-Fleet]\nFoo=bar\nFoo=baz\nFoo=qux\n", {"Foo": ["bar", "baz", "qux"]},
                     id="requirements: repeated keys accumulate in order"),
        pytest.param("[Unit]\nDescription=x\n", {}, id="requirements: no X-Fleet section"),
    ],
)
def test_expanded_requirements_map(text: str, expected: dict[str, list[str]]) -> None:
    assert expanded_requirements(UnitFile.from_text(text), "test.service") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("", None, id="machine id: none"),
        pytest.param("MachineID=123\n", "123", id="machine id: plain"),
        pytest.param('MachineID="123" "456"\n', "123", id="machine id: first of several"),
        pytest.param('X-ConditionMachineID="123" "456"\n', "123", id="machine id: deprecated form"),
        pytest.param("X-ConditionMachineID=456\nMachineID=123\n", "123",
                     id="machine id: modern beats deprecated after it"),
        pytest.param("MachineID=123\nX-ConditionMachineID=456\n", "123",
                     id="machine id: modern beats deprecated before it"),
        pytest.param("X-ConditionMachineBootID=123\n", "123", id="machine id: boot id as last resort"),
        pytest.param("X-ConditionMachineBootID=789\nX-ConditionMachineID=456\n", "456",
                     id="machine id: boot id loses to deprecated id"),
        pytest.param("X-ConditionMachineBootID=789\nMachineID=123\n", "123",
                     id="machine id: boot id loses to modern id"),
        pytest.param("MachineId=123\n", None, id="machine id: keys are case-sensitive"),
    ],
)
def test_machine_id(body: str, expected: str | None) -> None:
    assert reqs(body).machine_id == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("MachineMetadata=foo=bar\n", {"foo": {"bar"}}, id="metadata: one pair"),
        pytest.param('MachineMetadata="foo=bar" "foo=baz"\n', {"foo": {"bar", "baz"}},
                     id="metadata: same key twice on a line is OR"),
        pytest.param("MachineMetadata=foo=bar\nMachineMetadata=foo=baz\nMachineMetadata=foo=asdf\n",
                     {"foo": {"bar", "baz", "asdf"}}, id="metadata: same key on three lines"),
        pytest.param('MachineMetadata="foo=bar" "duck=quack"\n', {"foo": {"bar"}, "duck": {"quack"}},
                     id="metadata: two keys"),
        pytest.param("X-ConditionMachineMetadata=foo=bar\nMachineMetadata=foo=baz\n", {"foo": {"bar", "baz"}},
                     id="metadata: deprecated prefix merges with modern"),
        pytest.param("MachineMetadata=foo=\n", {}, id="metadata: empty value ignored"),
        pytest.param("MachineMetadata==asdf\n", {}, id="metadata: empty key ignored"),
        pytest.param("MachineMetadata=foo=asdf=WHAT\n", {}, id="metadata: two equals signs ignored"),
        pytest.param("MachineMetadata=a=b c=d\n", {}, id="metadata: unquoted pairs are one invalid value"),
        pytest.param(
            'MachineMetadata=oh=yeah\nMachineMetadata="oh=no" "whynot=zoidberg"\n'
            'X-ConditionMachineMetadata="one=abc" "two=def"\nMachineMetadata=bad\n',
            {"oh": {"yeah", "no"}, "whynot": {"zoidberg"}, "one": {"abc"}, "two": {"def"}},
            id="metadata: mixed example",
        ),
    ],
)
def test_metadata(body: str, expected: dict[str, set[str]]) -> None:
    assert dict(reqs(body).metadata) == {key: frozenset(values) for key, values in expected.items()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", False, id="global: empty unit"),
        pytest.param("foobarbaz", False, id="global: garbage"),
        pytest.param("Global=true", False, id="global: outside any section"),
        pytest.param("[Service]\nGlobal=true\n", False, id="global: in [Service]"),
        pytest.param("[X-Fleet]\nGlobal=false\n", False, id="global: false"),
        pytest.param("[X-Fleet]\nGlobal=what\n", False, id="global: what"),
        pytest.param("[X-Fleet]\nX-Global=true\n", False, id="global: X-Global is not a key"),
        pytest.param("[X-Fleet]\nX-ConditionGlobal=true\n", False,
                     id="global: X-ConditionGlobal is not a key"),
        pytest.param("[X-Fleet]\nGlobal=12\n", False, id="global: 12"),
        pytest.param("[X-Fleet]\nglobal=true\n", False, id="global: key is case-sensitive"),
        pytest.param("[X-Fleet]\nGlobal=true\n", True, id="global: true"),
        pytest.param("[X-Fleet]\nGlobal=True\n", True, id="global: True"),
        pytest.param("[X-Fleet]\nGlobal=Yes\n", True, id="global: Yes"),
        pytest.param("[X-Fleet]\nGlobal=On\n", True, id="global: On"),
        pytest.param("[X-Fleet]\nGlobal=1\n", True, id="global: 1"),
        pytest.param("[X-Fleet]\nGlobal=t\n", True, id="global: t"),
        pytest.param("[X-Fleet]\nGlobal=true\nGlobal=false\n", False, id="global: last value wins (false)"),
        pytest.param("[X-Fleet]\nGlobal=false\nGlobal=true\n", True, id="global: last value wins (true)"),
    ],
)
def test_is_global(text: str, expected: bool) -> None:
    assert requirements_for(UnitFile.from_text(text), "test.service").is_global is expected


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        pytest.param("%n|%N|%p|%i", "ssh@2.service", "ssh@2.service|ssh@2|ssh|2",
                     id="specifiers of an instance"),
        pytest.param("%n|%N|%p|%i", "test.service", "test.service|test|test|",
                     id="specifiers of a plain unit"),
        pytest.param("%n|%i", "novalue", "%n|%i", id="no expansion for a name without a dot"),
        pytest.param("%%n", "a.service", "%a.service", id="no %% escape"),
        pytest.param("100%", "a.service", "100%", id="a lone percent stays"),
    ],
)
def test_expand_specifiers(value: str, name: str, expected: str) -> None:
    assert expand_specifiers(value, name) == expected


def test_requirements_expand_specifiers_for_the_unit_name() -> None:
    unit = fleet('Conflicts=%p@*.service\nMachineOf=db@%i.service\nMachineMetadata="role=%p"\n'
                 "MachineID=%i\nReplaces=old-%N.service\n")
    got = requirements_for(unit, "web@3.service")
    assert got == Requirements(
        machine_id="3", peers=("db@3.service",), conflicts=("web@*.service",),
        metadata={"role": frozenset({"web"})}, replaces=("old-web@3.service",),
    )


def test_unknown_keys_and_warnings() -> None:
    unit = UnitFile.from_text("[X-Fleet]\nMachineOf=a.service\nMachineof=b\nFoo=1\nFoo=2\n[Service]\nBar=1\n")
    assert unknown_keys(unit) == ("Machineof", "Foo")
    assert unknown_key_warnings(unit, "x.service") == (
        'Unit x.service: unrecognized requirement in [X-Fleet] section: "Machineof"',
        'Unit x.service: unrecognized requirement in [X-Fleet] section: "Foo"',
    )


VALID = [
    pytest.param("", id="no requirements"),
    pytest.param("Global=true\nConflicts=foo*\n", id="Global with Conflicts"),
    pytest.param("Global=true\nMachineMetadata=region=us\n", id="Global with MachineMetadata"),
    pytest.param("MachineID=abc\n", id="MachineID alone"),
    pytest.param("MachineID=abc\nMachineMetadata=a=b\n", id="MachineID with metadata"),
    pytest.param("Replaces=foo.service\nMachineOf=bar.service\n",
                 id="Replaces with a non-overlapping MachineOf"),
    pytest.param("Global=false\nMachineID=abc\n", id="a false Global does not clash with MachineID"),
    pytest.param("Conflicts=b*x\nMachineOf=baz.service\n", id="conflict b*x does not match baz.service"),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_combinations(body: str) -> None:
    validate_requirements(fleet(body))
    assert requirement_problems(fleet(body)) == ()


INVALID = [
    pytest.param("Conflicts=b*e\nMachineOf=baz.service\n",
                 'unresolvable requirements: peer "baz.service" matches conflict "b*e"', 3,
                 id="peer matches a conflict"),
    pytest.param('Replaces="foo.service" "bar.service"\nMachineOf=bar.service\n',
                 'unresolvable requirements: peer "bar.service" matches replace "bar.service"', 3,
                 id="peer matches a replace"),
    pytest.param("MachineID=abc\nMachineOf=a.service\n", "MachineID cannot be used with Peers", 3,
                 id="MachineID with peers"),
    pytest.param("MachineID=abc\nConflicts=a*\n", "MachineID cannot be used with Conflicts", 3,
                 id="MachineID with Conflicts"),
    pytest.param("Global=true\nMachineID=abc\n", "MachineID cannot be used with Global", 3,
                 id="MachineID with Global"),
    pytest.param("X-ConditionMachineBootID=abc\nReplaces=a*\n", "MachineID cannot be used with Replaces", 3,
                 id="boot ID counts as MachineID with Replaces"),
    pytest.param("Global=yes\nX-ConditionMachineOf=a.service\n", "Global cannot be used with Peers", 3,
                 id="Global with peers"),
    pytest.param("Global=on\nReplaces=a*\n", "Global cannot be used with Replaces", 3,
                 id="Global with Replaces"),
    pytest.param("X-Conflicts=a*\nReplaces=b*\n", "Conflicts cannot be used with Replaces", 3,
                 id="Conflicts with Replaces"),
    pytest.param("MachineID=\nGlobal=1\n", "MachineID cannot be used with Global", 3,
                 id="an empty MachineID still counts"),
    pytest.param("Conflicts=x*\nMachineID=m\nMachineOf=x.service\nReplaces=x*\n",
                 'unresolvable requirements: peer "x.service" matches conflict "x*"', 4,
                 id="peer checks come before the combination checks"),
    pytest.param("MachineMetadata=a=b\nConflicts=ok.service web[.service\n",
                 'Conflicts pattern "web[.service" is malformed', 3, id="malformed Conflicts glob"),
    pytest.param("X-Conflicts=a\\\n", 'X-Conflicts pattern "a\\" is malformed', 2,
                 id="Conflicts glob with a trailing backslash"),
    pytest.param("Replaces=[]\n", 'Replaces pattern "[]" is malformed', 2, id="malformed Replaces glob"),
    pytest.param("Conflicts=" + "*a" * 17 + "\n", f'Conflicts pattern "{"*a" * 17}" has more than 16 "*"', 2,
                 id="Conflicts glob with too many stars"),
    pytest.param("Global=true\nReplaces=" + "x" * 300 + "\n",
                 f'Replaces pattern "{"x" * 61}..." is longer than 256 characters', 3,
                 id="Replaces glob that is too long, before the combination checks"),
]


@pytest.mark.parametrize(("body", "message", "line"), INVALID)
def test_invalid_combinations(body: str, message: str, line: int) -> None:
    with pytest.raises(UnitFileError) as info:
        validate_requirements(fleet(body))
    assert (info.value.msg, info.value.line) == (message, line)


def test_all_problems_are_listed_in_the_original_order() -> None:
    unit = fleet("Conflicts=x*\nMachineID=m\nMachineOf=x.service\nReplaces=x*\n")
    assert [p.msg for p in requirement_problems(unit)] == [
        'unresolvable requirements: peer "x.service" matches conflict "x*"',
        'unresolvable requirements: peer "x.service" matches replace "x*"',
        "MachineID cannot be used with Peers",
        "MachineID cannot be used with Conflicts",
        "MachineID cannot be used with Replaces",
        "Conflicts cannot be used with Replaces",
    ]


def test_glob_problems_name_each_pattern_once_with_its_line() -> None:
    unit = fleet("Conflicts=a[ ok*\nMachineOf=okay.service\nConflicts=a[ b\\\n")
    assert [(p.msg, p.line) for p in requirement_problems(unit)] == [
        ('Conflicts pattern "a[" is malformed', 2),
        ('Conflicts pattern "b\\" is malformed', 4),
        ('unresolvable requirements: peer "okay.service" matches conflict "ok*"', 3),
    ]


def test_a_backtracking_trap_within_the_limits_is_checked_at_once() -> None:
    # A regex would try every way to share the a's among the 15 stars (the old matcher did).
    unit = fleet("Conflicts=" + "*a" * 15 + "*b\nMachineOf=" + "a" * 240 + ".service\n")
    assert requirement_problems(unit) == ()


def test_more_peers_or_patterns_than_the_limit_are_refused_before_matching_each_pair() -> None:
    peers = "".join(f"MachineOf=p{i}.service\n" for i in range(257))
    unit = fleet(peers + "Conflicts=" + " ".join(f"c{i}*" for i in range(300)) + "\n")
    assert [(p.msg, p.line) for p in requirement_problems(unit)] == [
        ("257 MachineOf peers; at most 256 are allowed", 258),
        ("300 Conflicts patterns; at most 256 are allowed", 259),
    ]


def test_validation_does_not_expand_specifiers() -> None:
    validate_requirements(fleet("Conflicts=%p*\nMachineOf=web.service\n"))


def test_validation_relexes_the_canonical_form() -> None:
    unit = UnitFile.from_options([("X-Fleet", "Conflicts", "x" * 3000)])
    with pytest.raises(UnitFileError, match="line too long"):
        validate_requirements(unit)
