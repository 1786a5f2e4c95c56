"""can_run verdicts on one machine and its local units; the (load, machine ID) order."""

from __future__ import annotations

import pytest

from fleetd.engine.placement import LoadIndex, LocalView, Verdict, can_run, metadata_satisfied
from fleetd.model import MachineID, MachineState, Unit
from tests.unit.builders import machine, unit

HOST = machine("0123456789abcdef", role="web", region="eu")

VERDICTS: list[tuple[str, MachineState, list[Unit], Unit, Verdict]] = [
    ("no requirements", HOST, [], unit("a.service"), Verdict(True)),
    ("MachineID full", HOST, [], unit("a.service", machine_id="0123456789abcdef"), Verdict(True)),
    ("MachineID short", HOST, [], unit("a.service", machine_id="01234567"), Verdict(True)),
    (
        "MachineID other",
        HOST,
        [],
        unit("a.service", machine_id="0123"),
        Verdict(False, 'agent ID "0123456789abcdef" does not match required "0123"'),
    ),
    ("metadata match", HOST, [], unit("a.service", metadata={"role": ["db", "web"]}), Verdict(True)),
    (
        "metadata missing key",
        HOST,
        [],
        unit("a.service", metadata={"role": ["web"], "disk": ["ssd"]}),
        Verdict(False, "local Machine metadata insufficient"),
    ),
    (
        "metadata wrong value",
        HOST,
        [],
        unit("a.service", metadata={"region": ["us"]}),
        Verdict(False, "local Machine metadata insufficient"),
    ),
    ("peer present", HOST, [unit("p.service")], unit("a.service", peers=["p.service"]), Verdict(True)),
    (
        "peer absent",
        HOST,
        [unit("q.service")],
        unit("a.service", peers=["p.service", "q.service"]),
        Verdict(False, "required peer Unit(p.service) is not scheduled locally"),
    ),
    (
        "conflict by glob",
        HOST,
        [unit("web@2.service"), unit("web@1.service")],
        unit("web@3.service", conflicts=["web@*"]),
        Verdict(False, "found conflict with locally-scheduled Unit(web@1.service)"),
    ),
    (
        "conflict by plain name",
        HOST,
        [unit("b.service")],
        unit("a.service", conflicts=["b.service"]),
        Verdict(False, "found conflict with locally-scheduled Unit(b.service)"),
    ),
    (
        "conflict declared by the local unit",
        HOST,
        [unit("b.service", conflicts=["a.*"])],
        unit("a.service"),
        Verdict(False, "found conflict with locally-scheduled Unit(b.service)"),
    ),
    (
        "a unit does not conflict with itself",
        HOST,
        [],
        unit("a.service", conflicts=["a.service", "*"]),
        Verdict(True),
    ),
    (
        "glob star does not cross a slash",
        HOST,
        [unit("x/y.service")],
        unit("a.service", conflicts=["*"]),
        Verdict(True),
    ),
    (
        "replaced by a local unit",
        HOST,
        [unit("new.service", replaces=["old.*"])],
        unit("old.service"),
        Verdict(False, "replaced by locally-scheduled Unit(new.service)"),
    ),
    (
        "the replacer may join",
        HOST,
        [unit("old.service")],
        unit("new.service", replaces=["old.*"]),
        Verdict(True),
    ),
    (
        "circular replaces ignored",
        HOST,
        [unit("new.service", replaces=["old.service"])],
        unit("old.service", replaces=["new.service"]),
        Verdict(True),
    ),
    (
        "MachineID is checked before conflicts",
        HOST,
        [unit("b.service")],
        unit("a.service", machine_id="ffffffff", conflicts=["b.service"]),
        Verdict(False, 'agent ID "0123456789abcdef" does not match required "ffffffff"'),
    ),
]


@pytest.mark.parametrize(
    ("host", "local", "candidate", "verdict"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS]
)
def test_can_run(host: MachineState, local: list[Unit], candidate: Unit, verdict: Verdict) -> None:
    assert can_run(LocalView(host, {u.name: u for u in local}), candidate) == verdict


def test_metadata_values_or_keys_and() -> None:
    wanted = {"a": frozenset({"1", "2"}), "b": frozenset({"x"})}
    assert metadata_satisfied({"a": "2", "b": "x", "c": "z"}, wanted)
    assert not metadata_satisfied({"a": "3", "b": "x"}, wanted)
    assert not metadata_satisfied({"a": "1"}, wanted)
    assert metadata_satisfied({}, {})


def test_load_index_orders_by_load_then_machine_id() -> None:
    index = LoadIndex({MachineID("b"): 1, MachineID("c"): 0, MachineID("a"): 1, MachineID("d"): 0})
    assert list(index.ordered()) == ["c", "d", "a", "b"]
    index.set_load(MachineID("c"), 2)
    index.set_load(MachineID("a"), 0)
    assert list(index.ordered()) == ["a", "d", "b", "c"]
    index.remove(MachineID("d"))
    assert list(index.ordered()) == ["a", "b", "c"]
    assert len(index) == 3
    assert "d" not in index
