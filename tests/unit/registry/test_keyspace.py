"""The keyspace codec: key layout and value round trips, and clear errors for bad stored data."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, Keyspace, UnitRecord
from fleetd.registry.snapshot import ScheduledUnit
from tests.unit import hostile

H = "0123456789abcdef0123456789abcdef01234567"


def test_default_layout_matches_the_documented_keys() -> None:
    keys = Keyspace()
    assert keys.schema == "/_coreos.com/fleet/schema"
    assert keys.leader == "/_coreos.com/fleet/engine/leader"
    assert keys.machine("m1") == "/_coreos.com/fleet/machines/m1"
    assert keys.body(H) == f"/_coreos.com/fleet/bodies/{H}"
    assert keys.unit("a.service") == "/_coreos.com/fleet/units/a.service"
    assert keys.target("a.service") == "/_coreos.com/fleet/targets/a.service"
    assert keys.global_unit("g.service") == "/_coreos.com/fleet/globals/g.service"
    assert keys.schedule("m1") == "/_coreos.com/fleet/schedule/m1/"
    assert keys.scheduled("m1", "a.service") == "/_coreos.com/fleet/schedule/m1/a.service"
    assert keys.unit_state("a.service", "m1") == "/_coreos.com/fleet/states/a.service/m1"


@pytest.mark.parametrize("prefix", ["/x", "/x/", "x/", "x"])
def test_prefix_is_normalised_to_one_leading_and_trailing_slash(prefix: str) -> None:
    assert Keyspace(prefix).units == "/x/units/"


def test_one_machines_schedule_prefix_does_not_cover_another() -> None:
    keys = Keyspace()
    assert not keys.scheduled("m10", "a.service").startswith(keys.schedule("m1"))


def test_parse_keys() -> None:
    keys = Keyspace("/p/")
    assert keys.parse_scheduled("/p/schedule/m1/a.service") == ("m1", "a.service")
    assert keys.parse_unit_state("/p/states/a.service/m1") == ("a.service", "m1")
    assert keys.leaf("/p/units/a.service", keys.units) == "a.service"


@pytest.mark.parametrize(
    "key", ["/p/schedule/m1", "/p/schedule/m1/", "/p/schedule//a", "/p/schedule/m/a/b", "/q/x"]
)
def test_malformed_schedule_keys_are_refused(key: str) -> None:
    with pytest.raises(BadRecord, match="expected"):
        Keyspace("/p/").parse_scheduled(key)


def test_machine_round_trip() -> None:
    state = MachineState(MachineID("m1"), "10.0.0.1", {"region": "eu", "disk": "ssd"}, "0.1.0")
    text = ks.encode_machine(state)
    assert (
        text == '{"id":"m1","metadata":{"disk":"ssd","region":"eu"},"public_ip":"10.0.0.1","version":"0.1.0"}'
    )
    assert ks.decode_machine("k", text) == state


def test_machine_cap_round_trip_and_absent_is_no_cap() -> None:
    state = MachineState(MachineID("m1"), max_units=5)
    text = ks.encode_machine(state)
    assert '"max_units":5' in text
    assert ks.decode_machine("k", text) == state
    assert ks.decode_machine("k", '{"id":"m1"}').max_units == 0
    assert ks.decode_machine("k", '{"id":"m1","max_units":0}').max_units == 0


@pytest.mark.parametrize(
    "value",
    ["-1", "true", "false", "1.5", "2.0", '"3"', "null", "[3]", "{}", "1e3", str(10**9 + 1), "9" * 5000],
)
def test_hostile_machine_caps_are_bad_records(value: str) -> None:
    with pytest.raises(BadRecord) as info:
        ks.decode_machine("/p/machines/m1", f'{{"id":"m1","max_units":{value}}}')
    assert str(info.value).startswith("bad record at /p/machines/m1: ")


def test_cordon_round_trip_and_keys() -> None:
    keys = Keyspace("/p/")
    assert keys.cordon("m1") == "/p/cordons/m1"
    assert keys.cordoned_machine("/p/cordons/m1") == "m1"
    assert ks.decode_cordon("k", ks.encode_cordon(ks.Cordon("kernel update"))) == ks.Cordon("kernel update")


@pytest.mark.parametrize(
    "text", ["", "{}", "{bad", "[]", '"m1"', '{"reason":3}', '{"reason":"\ud800"}', "[" * 100_000]
)
def test_hostile_cordons_are_bad_records(text: str) -> None:
    with pytest.raises(BadRecord) as info:
        ks.decode_cordon("/p/cordons/m1", text)
    assert str(info.value).startswith("bad record at /p/cordons/m1: ")


@pytest.mark.parametrize(
    "key", ["/p/cordons/", "/p/cordons/a/b", "/p/cordons/-x", "/p/cordons/a b", "/q/cordons/m"]
)
def test_bad_cordon_keys_are_bad_records(key: str) -> None:
    with pytest.raises(BadRecord):
        Keyspace("/p/").cordoned_machine(key)


def test_unit_target_and_global_round_trip() -> None:
    record = UnitRecord(UnitName("g.service"), H, True, TargetState.LAUNCHED)
    assert ks.encode_unit(record) == f'{{"global":true,"hash":"{H}"}}'
    assert ks.decode_unit("k", ks.encode_unit(record), record.name, TargetState.LAUNCHED) == record
    assert ks.decode_target("k", "loaded") is TargetState.LOADED
    entry = ks.decode_global("k", ks.encode_global(record), record.name)
    assert (entry.hash, entry.state) == (H, TargetState.LAUNCHED)


def test_schedule_round_trip_and_inactive_is_not_schedulable() -> None:
    text = ks.encode_schedule(H, TargetState.LOADED)
    assert ks.decode_schedule("k", text, MachineID("m")) == ScheduledUnit(
        MachineID("m"), H, TargetState.LOADED
    )
    with pytest.raises(ValueError, match="inactive"):
        ks.encode_schedule(H, TargetState.INACTIVE)


def test_unit_state_round_trip() -> None:
    state = UnitState(
        UnitName("a.service"), MachineID("m"), "loaded", "active", "running", H, TargetState.LAUNCHED
    )
    assert ks.decode_unit_state("k", ks.encode_unit_state(state), state.name, state.machine_id) == state


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "malformed JSON"),
        ("[1]", "expected a JSON object, got list"),
        ('{"global":false}', "field 'hash' must be a string"),
        ('{"hash":"abc","global":false}', "not 40 lowercase hex digits"),
        (f'{{"hash":"{H}","global":"yes"}}', "field 'global' must be true or false"),
    ],
)
def test_bad_unit_records_name_the_key_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(BadRecord, match=problem) as info:
        ks.decode_unit("/p/units/a.service", text, UnitName("a.service"), TargetState.INACTIVE)
    assert str(info.value).startswith("bad record at /p/units/a.service: ")


def test_unknown_target_state_is_a_bad_record() -> None:
    with pytest.raises(BadRecord, match="invalid target state 'running'"):
        ks.decode_target("/p/targets/a", "running")


@pytest.mark.parametrize(
    "text",
    [f'{{"hash":"{H}","state":"inactive"}}', f'{{"hash":"{H}","state":"bogus"}}', f'{{"hash":"{H}"}}'],
)
def test_bad_schedule_entries(text: str) -> None:
    with pytest.raises(BadRecord):
        ks.decode_schedule("k", text, MachineID("m"))


@pytest.mark.parametrize(
    "text", ['{"id":"m","metadata":{"a":1}}', '{"id":""}', '{"id":"a/b"}', '{"public_ip":"x"}']
)
def test_bad_machine_records(text: str) -> None:
    with pytest.raises(BadRecord):
        ks.decode_machine("k", text)


def test_a_unit_state_without_a_state_field_is_loaded() -> None:
    text = f'{{"load":"loaded","active":"active","sub":"running","hash":"{H}"}}'
    state = ks.decode_unit_state("k", text, UnitName("a.service"), MachineID("m"))
    assert state.state is TargetState.LOADED
    assert (state.load_state, state.active_state, state.sub_state) == ("loaded", "active", "running")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "malformed JSON"),
        ("[1]", "expected a JSON object, got list"),
        ('"loaded"', "expected a JSON object, got str"),
        ('{"active":"a","sub":"s","hash":"h"}', "field 'load' must be a string"),
        ('{"load":1,"active":"a","sub":"s","hash":"h"}', "field 'load' must be a string"),
        ('{"load":"l","active":null,"sub":"s","hash":"h"}', "field 'active' must be a string"),
        ('{"load":"l","active":"a","sub":["s"],"hash":"h"}', "field 'sub' must be a string"),
        ('{"load":"l","active":"a","sub":"s","hash":{}}', "field 'hash' must be a string"),
        ('{"load":"l","active":"a","sub":"s","hash":"h","state":["x"]}', "field 'state' must be a string"),
        ('{"load":"l","active":"a","sub":"s","hash":"h","state":"inactive"}', "'inactive' not allowed here"),
        (
            '{"load":"l","active":"a","sub":"s","hash":"h","state":"running"}',
            "invalid target state 'running'",
        ),
        ('{"load":1,"active":"a","sub":"s","hash":"h","state":"running"}', "field 'load' must be a string"),
    ],
)
def test_bad_unit_states_name_the_key_and_the_first_problem(text: str, problem: str) -> None:
    with pytest.raises(BadRecord, match=problem) as info:
        ks.decode_unit_state("/p/states/a.service/m", text, UnitName("a.service"), MachineID("m"))
    assert info.value.key == "/p/states/a.service/m"


# The listing decoder of states/ records: the same result as parse_unit_state + decode_unit_state --------

STATE_KEYS = Keyspace("/p/")
STATE_TEXTS = ("loaded", "active", "running", "launched", "", " ", 'a"b', "a\\b", "\x00", "\x7f", "caf\xe9",
               "\udcff", "\u2028")  # fmt: skip
STATE_NAMES = hostile.BAD_NAMES + hostile.GOOD_NAMES + (
    "a\\x2d.service", "a.service.service", "y@a@b.timer", "x" * 248 + ".service", "x" * 249 + ".service",
    "a@b.slice", "a.b", "A-Z_0:9.socket",
)  # fmt: skip


def _state_or_problem(decode: Callable[[str, str], UnitState], key: str, text: str) -> UnitState | str:
    try:
        return decode(key, text)
    except BadRecord as exc:
        return str(exc)


def _reference(key: str, text: str) -> UnitState:
    name, machine_id = STATE_KEYS.parse_unit_state(key)
    return ks.decode_unit_state(key, text, name, machine_id)


STATE_MACHINES = (
    "m1", "0123456789abcdef", "a.b:c-d_e", "-m", ".m", "m/x", "", "x" * 255, "x" * 256, "\udcff",
)  # fmt: skip
plain_fields = st.sampled_from(STATE_TEXTS) | st.text(max_size=6)
agent_values = st.builds(
    lambda load, active, sub, hash_, state, ascii_only: json.dumps(
        {"load": load, "active": active, "sub": sub, "hash": hash_, "state": state},
        separators=(",", ":"), sort_keys=True, ensure_ascii=ascii_only,
    ),
    plain_fields, plain_fields, plain_fields, st.sampled_from([H, "", 'x"']) | st.text(max_size=4),
    st.sampled_from(["launched", "loaded", "launched", "loaded", "inactive", "Loaded"]), st.booleans(),
)  # fmt: skip
state_values = agent_values | hostile.values | agent_values.map(lambda text: text.replace(",", ", ", 1))
state_keys = st.builds(
    lambda name, machine_id: f"{STATE_KEYS.states}{name}/{machine_id}",
    st.sampled_from(STATE_NAMES) | hostile.names,
    st.sampled_from(STATE_MACHINES) | hostile.names,
) | hostile.keys(STATE_KEYS.prefix)  # fmt: skip


AGREES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@AGREES
@given(st.sampled_from(["a.service", "y@1.service", "a.b.socket"]), agent_values)
def test_the_listing_decoder_reads_any_field_text_as_json_does(name: str, text: str) -> None:
    key = STATE_KEYS.unit_state(name, "m1")
    decode = ks.unit_state_decoder(STATE_KEYS)
    assert _state_or_problem(decode, key, text) == _state_or_problem(_reference, key, text)


@AGREES
@given(state_keys, agent_values)
def test_the_listing_decoder_checks_any_key_as_the_key_parser_does(key: str, text: str) -> None:
    decode = ks.unit_state_decoder(STATE_KEYS)
    assert _state_or_problem(decode, key, text) == _state_or_problem(_reference, key, text)


@AGREES
@given(state_keys, state_values)
def test_the_listing_decoder_agrees_with_the_field_by_field_decoders(key: str, text: str) -> None:
    decode = ks.unit_state_decoder(STATE_KEYS)
    assert _state_or_problem(decode, key, text) == _state_or_problem(_reference, key, text)


@pytest.mark.parametrize("name", STATE_NAMES)
@pytest.mark.parametrize("machine_id", STATE_MACHINES)
def test_the_listing_decoder_refuses_the_keys_the_key_parser_refuses(name: str, machine_id: str) -> None:
    key = f"{STATE_KEYS.states}{name}/{machine_id}"
    text = ks.encode_unit_state(
        UnitState(UnitName("x.service"), MachineID("m"), "loaded", "active", "running", H, TargetState.LOADED)
    )
    decode = ks.unit_state_decoder(STATE_KEYS)
    assert _state_or_problem(decode, key, text) == _state_or_problem(_reference, key, text)


@pytest.mark.parametrize("name", ["a.service", "y@1.service", "a\\x2d.service", "x" * 248 + ".service"])
def test_the_listing_decoder_takes_agent_records_as_they_are_written(name: str) -> None:
    state = UnitState(UnitName(name), MachineID("0123456789abcdef"), "loaded", "active", "running", H,
                      TargetState.LAUNCHED)  # fmt: skip
    key = STATE_KEYS.unit_state(state.name, state.machine_id)
    assert ks.unit_state_decoder(STATE_KEYS)(key, ks.encode_unit_state(state)) == state
    assert ks._plain_state_key(STATE_KEYS.states)(key) is not None  # the short way, not the long one


# units/ and schedule/ values: the canonical form is read by one regular expression, anything else by json;
# a leading space (JSON whitespace) sends the same value the long way, which must agree.
HASHES = st.sampled_from([H, H.upper(), H[:39], H + "0", 'x"', ""]) | st.text(max_size=4)
unit_values = st.builds(
    lambda is_global, unit_hash: f'{{"global":{is_global},"hash":"{unit_hash}"}}',
    st.sampled_from(["true", "false", "True", "1", '"true"']), HASHES,
) | hostile.values  # fmt: skip
schedule_values = st.builds(
    lambda unit_hash, state: f'{{"hash":"{unit_hash}","state":"{state}"}}',
    HASHES, st.sampled_from(["launched", "loaded", "inactive", "Loaded", ""]),
) | hostile.values  # fmt: skip


def _record_or_bad(decode: Callable[[str], object], text: str) -> object:
    try:
        return decode(text)
    except BadRecord:
        return BadRecord


@AGREES
@given(unit_values)
def test_a_unit_record_decodes_the_short_way_as_the_long_way(text: str) -> None:
    def decode(value: str) -> object:
        return ks.decode_unit("k", value, UnitName("a.service"), TargetState.LAUNCHED)

    assert _record_or_bad(decode, text) == _record_or_bad(decode, " " + text)


@AGREES
@given(schedule_values)
def test_a_schedule_entry_decodes_the_short_way_as_the_long_way(text: str) -> None:
    def decode(value: str) -> object:
        return ks.decode_schedule("k", value, MachineID("m1"))

    assert _record_or_bad(decode, text) == _record_or_bad(decode, " " + text)


def test_records_as_fleet_writes_them_take_the_short_way() -> None:
    record = UnitRecord(UnitName("a.service"), H, True, TargetState.LOADED)
    assert ks._CANONICAL_UNIT(ks.encode_unit(record)) is not None
    assert ks.decode_unit("k", ks.encode_unit(record), record.name, TargetState.LOADED) == record
    text = ks.encode_schedule(H, TargetState.LAUNCHED)
    assert ks._CANONICAL_SCHEDULE(text) is not None
    entry = ScheduledUnit(MachineID("m1"), H, TargetState.LAUNCHED)
    assert ks.decode_schedule("k", text, MachineID("m1")) == entry
