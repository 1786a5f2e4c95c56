"""Registry text never reaches the terminal raw: escape sequences in names, Descriptions, metadata, states and
unit files are printed as visible ``\\x1b``-style text (fleetctl.output.visible)."""

from __future__ import annotations

import hashlib
import json

import pytest

from fleetctl.output import Table, render_table, visible
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.keyspace import UnitRecord
from tests.unit.fleetctl.conftest import FakeCluster

CLEAR = "\x1b[2J\x1b]0;pwned\x07"  # clear the screen, set the window title
SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07"


@pytest.mark.parametrize(
    ("text", "multiline", "expected"),
    [
        ("hello.service", False, "hello.service"),
        (CLEAR, False, SHOWN),
        ("a\tb\nc\rd", False, "a\\x09b\\x0ac\\x0dd"),
        ("a\tb\nc\rd", True, "a\tb\nc\\x0dd"),
        ("\x00\x7f\x85\x9b", True, "\\x00\\x7f\\x85\\x9b"),
        ("caf\u00e9 \u2603 back\\slash", False, "caf\u00e9 \u2603 back\\slash"),
        ("bad\udcffbyte", False, "bad\\udcffbyte"),
    ],
    ids=[
        "plain",
        "escape sequences",
        "one line",
        "multi-line keeps newline and tab",
        "NUL DEL C1",
        "unicode",
        "surrogate",
    ],
)
def test_visible(text: str, multiline: bool, expected: str) -> None:
    assert visible(text, multiline=multiline) == expected


def test_table_cells_are_made_visible_before_columns_are_measured() -> None:
    table = Table(("unit", "desc"), ({"unit": "a\nb", "desc": CLEAR},))
    assert render_table(table, legend=False) == f"a\\x0ab\t{SHOWN}\n"


def _put_raw(cluster: FakeCluster, name: str, body: str, target: TargetState = TargetState.INACTIVE) -> None:
    """A unit written straight to the registry (any etcd client can), bypassing fleetctl's checks."""
    digest = hashlib.sha1(body.encode()).hexdigest()
    record = UnitRecord(UnitName(name), digest, False, target)
    cluster.run(cluster.registry.put_units([(record, body)]))


@pytest.fixture
def hostile() -> FakeCluster:
    cluster = FakeCluster(agent=False)
    cluster.add_machines(MachineState(MachineID("1a2b3c4d5e6f"), "10.0.0.1", {"role": CLEAR}))
    _put_raw(cluster, "evil.service", f"[Unit]\nDescription=Hi{CLEAR}\n\n[Service]\nExecStart=/bin/true\n")
    _put_raw(cluster, f"x{CLEAR}.service", "[Service]\nExecStart=/bin/true\n")
    cluster.publish(
        UnitState(UnitName("evil.service"), MachineID("1a2b3c4d5e6f"), "loaded", CLEAR, "dead", "h")
    )
    return cluster


@pytest.mark.parametrize(
    "args",
    [
        ["list-machines"],
        ["list-units"],
        ["list-unit-files", "--fields", "unit,desc"],
        ["cat", "evil.service"],
    ],
    ids=["metadata", "unit state", "description and name", "cat"],
)
def test_no_escape_sequence_reaches_the_terminal(hostile: FakeCluster, args: list[str]) -> None:
    result = hostile.invoke(args)
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "\x07" not in result.stdout + result.stderr
    assert SHOWN in result.stdout


def test_cat_keeps_newlines_and_tabs(hostile: FakeCluster) -> None:
    _put_raw(hostile, "tab.service", "[Service]\nExecStart=/bin/echo\ta\n")
    assert hostile.invoke(["cat", "tab.service"]).stdout == "[Service]\nExecStart=/bin/echo\ta\n"


def test_error_messages_echoing_names_are_made_visible(hostile: FakeCluster) -> None:
    result = hostile.invoke(["cat", f"nope{CLEAR}"])
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr
    assert SHOWN in result.stderr


def test_json_output_escapes_control_characters_itself(hostile: FakeCluster) -> None:
    result = hostile.invoke(["list-machines", "--output", "json"])
    assert set(result.stdout) <= {chr(code) for code in range(0x20, 0x7F)} | {"\n"}
    assert json.loads(result.stdout)[0]["metadata"] == {"role": CLEAR}


def test_a_wait_timeout_echoing_systemd_states_is_made_visible(hostile: FakeCluster) -> None:
    result = hostile.invoke(["start", "--block-attempts", "1", "evil.service"])
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr
    assert f"(systemd: loaded/{SHOWN}/dead)" in result.stderr
