"""Hostile registry data never takes the cluster down (DESIGN.md §3: everything read from etcd is untrusted).

Arbitrary values (any JSON shape, 10,000-deep nesting, 5,000-digit numbers, bytes that are not UTF-8) under
arbitrary keys (every prefix of the keyspace; names that are not unit names or machine IDs) next to good
units: no exception escapes the decoders, the engine, the agent or fleetctl; the cluster goes idle (the
store revision stays put over two more passes); the good units are still scheduled, loaded and started;
every key the engine writes reads back; each bad record is reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.model import MachineID, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord
from fleetd.registry.memory import MemoryKV
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, FakeCluster
from tests.unit.hostile import (
    BAD_NAMES,
    DEEP_LIST,
    DEEP_OBJECT,
    GOOD,
    GOOD_FILE,
    GOOD_GLOBAL,
    HUGE_NUMBER,
    KEYS,
    M1,
    PROTECTED,
    Outcome,
    garbage,
    names,
    run_cluster,
    values,
)

SUITE = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
TRIED = Counter[str]()  # figures for the report: examples run per suite


def check_cluster(outcome: Outcome) -> None:
    assert outcome.after_two_more == outcome.idle_revision, "write loop: the store kept changing while idle"
    assert outcome.schedule.get(GOOD) == (M1, GOOD_FILE.hash), outcome.schedule
    assert GOOD in outcome.loaded and GOOD_GLOBAL in outcome.loaded, sorted(outcome.loaded)
    assert {GOOD, GOOD_GLOBAL} <= outcome.started
    for key in outcome.engine_puts:
        if key.startswith(KEYS.schedules):
            KEYS.parse_scheduled(key)  # raises BadRecord: the engine wrote a key it cannot read back
    repeated = [m for m, n in Counter(outcome.warnings).items() if n > 1]
    assert not repeated, f"reported more than once: {repeated}"


# Decoders ----------------------------------------------------------------------------------------------

Decode = Callable[[str, str], object]
DECODERS: dict[str, Decode] = {
    "machine": ks.decode_machine,
    "unit": lambda k, t: ks.decode_unit(k, t, UnitName("a.service"), TargetState.LAUNCHED),
    "target": ks.decode_target,
    "body": ks.decode_body,
    "global": lambda k, t: ks.decode_global(k, t, UnitName("a.service")),
    "schedule": lambda k, t: ks.decode_schedule(k, t, MachineID("m1")),
    "unit_state": lambda k, t: ks.decode_unit_state(k, t, UnitName("a.service"), MachineID("m1")),
    "cordon": ks.decode_cordon,
    "failed": records.decode_failed,
    "rescheduled": records.decode_rescheduled,
    "rollout": records.decode_rollout,
}
PARSERS: dict[str, Callable[[str], object]] = {
    "leaf": lambda k: KEYS.leaf(k, KEYS.units),
    "unit_name": lambda k: KEYS.unit_name(k, KEYS.units),
    "machine_id": KEYS.machine_id,
    "body_hash": KEYS.body_hash,
    "scheduled": KEYS.parse_scheduled,
    "unit_state": KEYS.parse_unit_state,
    "cordoned_machine": KEYS.cordoned_machine,
    "failed": KEYS.parse_failed,
    "rollout": KEYS.rollout_name,
}


@SUITE
@given(values, st.sampled_from(sorted(DECODERS)))
def test_every_decoder_raises_bad_record_and_nothing_else(text: str, decoder: str) -> None:
    TRIED["decoders"] += 1
    with contextlib.suppress(BadRecord):
        DECODERS[decoder]("/h/k", text)


@SUITE
@given(st.lists(names, min_size=1, max_size=3), st.sampled_from(sorted(PARSERS)))
def test_every_key_parser_raises_bad_record_and_nothing_else(parts: list[str], parser: str) -> None:
    TRIED["parsers"] += 1
    for segment in ("units/", "machines/", "bodies/", "schedule/", "states/"):
        with contextlib.suppress(BadRecord):
            PARSERS[parser](KEYS.prefix + segment + "/".join(parts))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_unit_names_are_bad_records(name: str) -> None:
    for parse in (
        lambda: KEYS.parse_scheduled(KEYS.scheduled("m1", name)),
        lambda: KEYS.parse_unit_state(KEYS.unit_state(name, "m1")),
        lambda: KEYS.unit_name(KEYS.unit(name), KEYS.units),
        lambda: KEYS.unit_name(KEYS.global_unit(name), KEYS.globals),
    ):
        with pytest.raises(BadRecord):
            parse()


@pytest.mark.parametrize("machine_id", ["a/b", "", "..", ".", "bad name", "x" * 300, "caf\udce9", "-", "@x"])
def test_names_that_are_not_machine_ids_are_bad_records(machine_id: str) -> None:
    for parse in (
        lambda: KEYS.parse_scheduled(KEYS.scheduled(machine_id, "a.service")),
        lambda: KEYS.parse_unit_state(KEYS.unit_state("a.service", machine_id)),
        lambda: KEYS.machine_id(KEYS.machine(machine_id)),
        lambda: ks.decode_machine("k", f'{{"id":{json.dumps(machine_id)}}}'),
    ):
        with pytest.raises(BadRecord):
            parse()


@pytest.mark.parametrize(
    "text", [DEEP_LIST, DEEP_OBJECT, HUGE_NUMBER, f'{{"hash":{HUGE_NUMBER}}}', '{"id":"\\ud800"}', "\udcff"]
)
def test_known_killers_are_bad_records(text: str) -> None:
    for decode in DECODERS.values():
        if decode is not DECODERS["body"] or "\udcff" in text:
            with pytest.raises(BadRecord):
                decode("/h/k", text)


# Engine and agent --------------------------------------------------------------------------------------


@SUITE
@given(garbage(KEYS.prefix, PROTECTED))
def test_engine_and_agent_survive_any_registry_data(writes: list[tuple[str, str]]) -> None:
    TRIED["cluster"] += 1
    TRIED["cluster writes"] += len(writes)
    check_cluster(asyncio.run(run_cluster(writes)))


@pytest.mark.parametrize(
    ("writes", "reported"),
    [
        pytest.param(
            [(KEYS.unit("a/b.service"), f'{{"global":false,"hash":"{GOOD_FILE.hash}"}}'),
             (KEYS.target("a/b.service"), "launched")],
            ["/h/units/a/b.service: not a key directly under"],
            id="unit name with a slash, launched: no schedule key it cannot read back, no write loop",
        ),
        pytest.param(
            [(KEYS.global_unit("bad name.service"), f'{{"hash":"{GOOD_FILE.hash}","state":"launched"}}')],
            ["invalid unit name bad name.service"],
            id="global unit with a space in its name: the agent carries on",
        ),
        pytest.param(
            [(KEYS.unit("x.service"), '{"global":false,"hash":"' + "ba" * 20 + '"}'),
             (KEYS.target("x.service"), "launched"),
             (KEYS.body("ba" * 20), "[Service]\nExecStart=/bin/\udcff\n")],
            [f"skipping unit x.service: bad unit file at /h/bodies/{'ba' * 20}:"
             " not valid UTF-8 text (line 2)"],
            id="body not UTF-8: the unit is neither placed nor loaded",
        ),
        pytest.param(
            [(KEYS.scheduled(M1, "x.service"), '{"hash":"' + "ba" * 20 + '","state":"launched"}'),
             (KEYS.body("ba" * 20), "[X-Fleet]\nMachineOf=\n")],
            [],
            id="scheduled unit with an unusable body: skipped by the agent, unscheduled by the engine",
        ),
        pytest.param(
            [(KEYS.machine("m2"), DEEP_LIST), (KEYS.schedule("m1") + "y.service", DEEP_OBJECT),
             (KEYS.unit_state("good.service", "m1"), HUGE_NUMBER), (KEYS.body("zz"), "x"),
             (KEYS.prefix + "engine/leader", "\udcff"), (KEYS.schema, "2")],
            ["/h/machines/m2: JSON nested too deeply", "/h/schedule/m1/y.service: JSON nested too deeply",
             "/h/bodies/zz: body key is not 40 lowercase hex digits"],
            id="deep nesting, huge numbers, a body key that is no hash, a garbage leader value",
        ),
    ],
)
def test_known_killers_do_not_stop_the_cluster(writes: list[tuple[str, str]], reported: list[str]) -> None:
    outcome = asyncio.run(run_cluster(writes))
    check_cluster(outcome)
    for problem in reported:
        assert any(problem in message for message in outcome.warnings), (problem, outcome.warnings)


def test_the_agent_does_not_load_a_global_unit_whose_body_is_not_usable() -> None:
    bad = "ba" * 20
    writes = [
        (KEYS.global_unit("g2.service"), f'{{"hash":"{bad}","state":"launched"}}'),
        (KEYS.body(bad), "[Service]\nExecStart=/bin/true\n\n[X-Fleet\n"),  # does not parse
    ]
    outcome = asyncio.run(run_cluster(writes))
    check_cluster(outcome)
    assert "g2.service" not in outcome.loaded
    skipped = [m for m in outcome.warnings if m.startswith("fleetd.agent.source: unit=g2.service skipped")]
    assert len(skipped) == 1 and f"its body {bad} is not usable" in skipped[0], outcome.warnings


def test_a_bad_record_is_reported_once_per_key_and_mod_revision() -> None:
    writes = [(KEYS.unit("a/b.service"), "{}"), (KEYS.global_unit("bad name.service"), "{}")]
    outcome = asyncio.run(run_cluster(writes))
    assert sum("a/b.service" in m for m in outcome.warnings) == 1, outcome.warnings
    assert sum("bad name.service" in m for m in outcome.warnings) == 1, outcome.warnings


# fleetctl ----------------------------------------------------------------------------------------------

FLEETCTL_KEYS = ks.Keyspace()
COMMANDS = (["list-units"], ["list-machines", "-l"], ["list-unit-files"], ["cat", "hello.service"])


@SUITE
@given(garbage(FLEETCTL_KEYS.prefix, [FLEETCTL_KEYS.machine(MACHINE_A.id)]))
def test_fleetctl_reads_survive_any_registry_data(writes: list[tuple[str, str]]) -> None:
    TRIED["fleetctl"] += 1
    cluster = FakeCluster(kv=MemoryKV(clock=lambda: 0.0), agent=False)
    cluster.add_machines(MACHINE_A)
    hello = cluster.submit("hello.service", HELLO, TargetState.LAUNCHED)
    cluster.publish(
        UnitState(UnitName("hello.service"), MACHINE_A.id, "loaded", "active", "running", hello.hash,
                  TargetState.LAUNCHED)
    )

    protected = (
        FLEETCTL_KEYS.unit("hello.service"),
        FLEETCTL_KEYS.target("hello.service"),
        FLEETCTL_KEYS.unit_state("hello.service", MACHINE_A.id),
    )

    async def write() -> None:
        for key, value in writes:
            if key not in protected:
                await cluster.kv.put(key, value)

    cluster.run(write())
    hello_body = any(key.startswith(FLEETCTL_KEYS.bodies) for key, _ in writes)
    for args in COMMANDS:
        result = cluster.invoke(args)  # catch_exceptions=False: any exception fails the test
        assert "Traceback" not in result.output
        if args[0] == "cat" and hello_body and result.exit_code == 1:
            continue  # the garbage may have replaced hello's body: "not found" is the answer then
        assert result.exit_code == 0, (args, result.output)
        if args[0] in ("list-units", "list-unit-files", "cat"):
            assert "hello" in result.output or "Hello" in result.output, (args, result.output)


def teardown_module() -> None:
    print(f"\nhostile suite: examples tried {dict(TRIED)}")
