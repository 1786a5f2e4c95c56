"""Unit names: api.ValidateName, NewUnitNameInfo, RecognizedUnitType and fleetctl's unitNameMangle."""

from __future__ import annotations

import pytest

from fleetd.errors import UnitNameError
from fleetd.unitfile.names import (
    UnitNameInfo,
    base_name,
    is_recognized_type,
    mangle,
    template_of,
    validate_unit_name,
)

LONG_OK = "a" * (256 - len(".service")) + ".service"
LONG_BAD = "a" * (257 - len(".service")) + ".service"

ACCEPTED = [
    "foo.service", "hello.mount", "foo@123.service", "foo@.service", "yo.yo.service", "hello@world.path",
    "hello:world.service", "yes@no\\.service", "foo-bar.mount", "jalapano_chips.service", LONG_OK,
    "foo@1.path", "foo@1.service", "foo@1.socket", "foo@1.target", "foo@1.timer",
]


@pytest.mark.parametrize("name", ACCEPTED, ids=lambda n: f"accepts {n[:40]}")
def test_validate_accepts(name: str) -> None:
    validate_unit_name(name)


REJECTED = [
    ("", "unit name cannot be empty"),
    (LONG_BAD, "unit name exceeds maximum length (256)"),
    ("fooservice", 'unit name must contain "."'),
    ("barmount", 'unit name must contain "."'),
    ("bar@foo", 'unit name must contain "."'),
    ("foo.", 'unit name cannot end in "."'),
    ("foo.service.", 'unit name cannot end in "."'),
    ("foo@foo.service.", 'unit name cannot end in "."'),
    ("foo.bar", 'invalid unit type: "bar"'),
    ("hello.cerveza", 'invalid unit type: "cerveza"'),
    ("foo.servICE", 'invalid unit type: "servICE"'),
    ("foo%.service", "invalid character '%' in unit name"),
    ("foo$asd.service", "invalid character '$' in unit name"),
    ("hello##.mount", "invalid character '#' in unit name"),
    ("yes/no.service", "invalid character '/' in unit name"),
    ("this+that.mount", "invalid character '+' in unit name"),
    ("dog=woof@.mount", 'invalid unit type for template: "mount"'),
    ("@foo.service", 'unit name cannot start in "@"'),
    ("@this.mount", 'invalid unit type for template: "mount"'),
    ("foo@1.automount", 'invalid unit type for template: "automount"'),
    ("foo@1.busname", 'invalid unit type for template: "busname"'),
    ("foo@1.device", 'invalid unit type for template: "device"'),
    ("foo@1.mount", 'invalid unit type for template: "mount"'),
    ("foo@1.scope", 'invalid unit type for template: "scope"'),
    ("foo@1.slice", 'invalid unit type for template: "slice"'),
    ("foo@1.snapshot", 'invalid unit type for template: "snapshot"'),
    ("foo@1.swap", 'invalid unit type for template: "swap"'),
    ("hello@*.service", "invalid character '*' in unit name"),
    ("foo@{1,3}.service", "invalid character '{' in unit name"),
    ("é" * 127 + ".service", "unit name exceeds maximum length (256)"),
    ("tab\there.service", "invalid character '\\t' in unit name"),
]


@pytest.mark.parametrize(("name", "message"), REJECTED, ids=[f"rejects {n[:30]!r}" for n, _ in REJECTED])
def test_validate_rejects(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as info:
        validate_unit_name(name)
    assert str(info.value) == message


NAMED = [
    ("foo.service", "foo", "foo", "", "", False, False),
    ("foo@.service", "foo@", "foo", "foo@.service", "", False, True),
    ("foo@bar.service", "foo@bar", "foo", "foo@.service", "bar", True, False),
    ("foo@bar@baz.service", "foo@bar@baz", "foo", "foo@.service", "bar@baz", True, False),
    ("foo.1@.service", "foo.1@", "foo.1", "foo.1@.service", "", False, True),
    ("foo.1@2.service", "foo.1@2", "foo.1", "foo.1@.service", "2", True, False),
    ("ssh@.socket", "ssh@", "ssh", "ssh@.socket", "", False, True),
    ("ssh@1.socket", "ssh@1", "ssh", "ssh@.socket", "1", True, False),
]


@pytest.mark.parametrize("row", NAMED, ids=[f"named unit {row[0]}" for row in NAMED])
def test_unit_name_info(row: tuple[str, str, str, str, str, bool, bool]) -> None:
    info = UnitNameInfo.parse(row[0])
    assert info is not None
    got = (info.full_name, info.name, info.prefix, info.template, info.instance, info.is_instance,
           info.is_template)
    assert got == row


@pytest.mark.parametrize("name", ["foo", "bar@baz"], ids=["no dot", "instance without dot"])
def test_unit_name_info_needs_a_dot(name: str) -> None:
    assert UnitNameInfo.parse(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("foo@1.service", "foo@.service"),
        ("ssh@host.socket", "ssh@.socket"),
        ("foo@.service", None),
        ("foo.service", None),
        ("foo", None),
    ],
    ids=["instance", "socket instance", "a template has no template", "plain unit", "no dot"],
)
def test_template_of(name: str, expected: str | None) -> None:
    assert template_of(name) == expected


RECOGNIZED = [(f"foo.{t}", True) for t in ("service", "socket", "path", "timer", "mount", "automount",
                                            "device")]
RECOGNIZED += [(f"foo.{t}", False) for t in ("swap", "target", "snapshot", "network", "netdev", "link",
                                             "unknown")]


@pytest.mark.parametrize(("name", "expected"), RECOGNIZED,
                         ids=[f"recognized {n}: {e}" for n, e in RECOGNIZED])
def test_is_recognized_type(name: str, expected: bool) -> None:
    assert is_recognized_type(name) is expected


MANGLED = [
    ("foo", "foo.service"),
    ("foo.1", "foo.1.service"),
    ("foo/bar.socket", "bar.socket"),
    ("foo.socket", "foo.socket"),
    ("foo.service", "foo.service"),
    ("x.target", "x.target.service"),
    ("foo.link", "foo.link.service"),
    ("examples/hello", "hello.service"),
    ("dir/sub/", "sub.service"),
    ("hello@*", "hello@*.service"),
]


@pytest.mark.parametrize(("arg", "expected"), MANGLED, ids=[f"mangle {a} -> {e}" for a, e in MANGLED])
def test_mangle(arg: str, expected: str) -> None:
    assert mangle(arg) == expected


@pytest.mark.parametrize(("path", "expected"),
                         [("", "."), ("/", "/"), ("///", "/"), ("a/b", "b"), ("a/b//", "b")])
def test_base_name_follows_go_path_base(path: str, expected: str) -> None:
    assert base_name(path) == expected
