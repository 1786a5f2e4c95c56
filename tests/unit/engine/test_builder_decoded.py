"""The snapshot builder gives the same snapshot and problems from a leader's decoded Mirror entries as from
key-values read directly (fleetctl plan's path), whatever is stored (Hypothesis, hostile keys and values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.engine.builder import Entry, SnapshotBuilder, mirror_decoders
from fleetd.engine.engine import mirrored_prefixes, parse_unit_body
from fleetd.model import MachineState, TargetState
from fleetd.registry import keyspace as ks
from fleetd.registry.kv import KeyValue
from fleetd.registry.mirror import Decoded
from fleetd.registry.registry import UnitRecord
from tests.unit.hostile import GOOD, GOOD_FILE, KEYS, PROTECTED, garbage, names, values

# cordons/, metadata/, reschedules/ and failed/ are not among the hostile module's segments (a valid cordon
# would drain its units)
MACHINE_KEYED = st.lists(
    st.tuples(
        st.sampled_from([KEYS.cordons, KEYS.metadata, KEYS.reschedules, KEYS.failed + "good.service/"]),
        names | st.just("m1") | st.just(GOOD),
        values,
    ).map(lambda t: (t[0] + t[1], t[2])),
    max_size=4,
)

# hash pins (schedule/<machine>/pin/<unit>): good, hostile names and hostile values
PINS = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2"]) | names,
        st.just(GOOD) | names,
        st.just(ks.encode_pin("a" * 40)) | values,
    ).map(lambda t: (KEYS.pin(t[0], t[1]), t[2])),
    max_size=3,
)

GOOD_WRITES = [
    (KEYS.machine("m1"), ks.encode_machine(MachineState("m1"))),
    (KEYS.unit(GOOD), ks.encode_unit(UnitRecord(GOOD, GOOD_FILE.hash, False, TargetState.LAUNCHED))),
    (KEYS.target(GOOD), TargetState.LAUNCHED.value),
    (KEYS.body(GOOD_FILE.hash), GOOD_FILE.canonical),
]


def _read(writes: Sequence[tuple[str, str]]) -> dict[str, dict[str, KeyValue]]:
    read: dict[str, dict[str, KeyValue]] = {prefix: {} for prefix in mirrored_prefixes(KEYS)}
    for revision, (key, value) in enumerate(writes, 1):
        for prefix, stored in read.items():
            if key.startswith(prefix):
                stored[key] = KeyValue(key, value, revision, revision, 1)
    return read


def _decoded(read: Mapping[str, Mapping[str, KeyValue]]) -> dict[str, dict[str, Entry]]:
    decoders = mirror_decoders(KEYS)
    out: dict[str, dict[str, Entry]] = {}
    for prefix, stored in read.items():
        decoder = decoders.get(prefix)
        out[prefix] = {}
        for key, kv in stored.items():
            if decoder is None:
                out[prefix][key] = kv
                continue
            try:
                record = decoder(kv)
            except ks.BadRecord as exc:
                record = exc
            out[prefix][key] = Decoded(key, kv.mod_revision, record)
    return out


def _build(read: Mapping[str, Mapping[str, Entry]]) -> tuple[object, ...]:
    bodies = {k: v for k, v in read[KEYS.bodies].items() if isinstance(v, KeyValue)}
    built = SnapshotBuilder(KEYS, parse_unit_body).build(
        100, machines=read[KEYS.machines], units=read[KEYS.units], targets=read[KEYS.targets],
        bodies=bodies, schedule=read[KEYS.schedules], bodies_revision=100, cordons=read[KEYS.cordons],
        metadata=read[KEYS.metadata], failed=read[KEYS.failed], rescheduled=read[KEYS.reschedules],
    )
    return built.snapshot, built.referenced, sorted(built.problems)


@settings(max_examples=300, deadline=None)
@given(garbage(KEYS.prefix, PROTECTED), MACHINE_KEYED, PINS)
def test_decoded_entries_build_what_key_values_build(
    writes: list[tuple[str, str]], machine_keyed: list[tuple[str, str]], pins: list[tuple[str, str]]
) -> None:
    read = _read([*GOOD_WRITES, *writes, *machine_keyed, *pins])
    assert _build(_decoded(read)) == _build(read)


def test_the_good_unit_is_built_from_decoded_entries() -> None:
    snapshot = _build(_decoded(_read(GOOD_WRITES)))[0]
    assert list(snapshot.units) == [GOOD]  # type: ignore[attr-defined]


OLD_HASH = "a" * 40


def test_a_hash_pin_keeps_its_body_referenced_and_is_neither_reported_nor_removed() -> None:
    pin = (KEYS.pin("m1", GOOD), ks.encode_pin(OLD_HASH))
    for read in (_read([*GOOD_WRITES, pin]), _decoded(_read([*GOOD_WRITES, pin]))):
        snapshot, referenced, problems = _build(read)
        assert OLD_HASH in referenced  # type: ignore[operator]
        assert problems == []
        assert snapshot.extra_schedule == ()  # type: ignore[attr-defined]


def test_a_bad_hash_pin_is_reported_once_and_left_alone() -> None:
    pin = (KEYS.pin("m1", GOOD), '{"hash": "nope"}')
    snapshot, referenced, problems = _build(_read([*GOOD_WRITES, pin]))
    assert problems == [f"ignoring hash pin: bad record at {pin[0]}: field 'hash' is not 40 lowercase hex"
                        " digits: nope"]
    assert snapshot.extra_schedule == () and referenced == {GOOD_FILE.hash}  # type: ignore[attr-defined]
