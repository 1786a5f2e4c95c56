"""A builder updated with each batch of changes gives what a build from scratch gives after every batch: the
same snapshot, referenced and unreferenced bodies and problems (each once), whatever is put and deleted
(Hypothesis: good records, hostile keys and values, deletes, overwrites), from a Mirror or from key-values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.engine.builder import Built, Entry, SnapshotBuilder, mirror_decoders
from fleetd.engine.engine import mirrored_prefixes, parse_unit_body
from fleetd.model import MachineID, MachineState, Rescheduled, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry import records
from fleetd.registry.keyspace import Cordon
from fleetd.registry.kv import KeyValue
from fleetd.registry.mirror import Decoded
from fleetd.registry.registry import UnitRecord
from fleetd.unitfile.unit import UnitFile
from tests.unit.hostile import GOOD_FILE, KEYS, keys, values

CONFLICTING = UnitFile.from_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nConflicts=u*.service\n")
BAD_FILE_TEXT = "[Service\n"
BAD_HASH = "ba" * 20
HASHES = (GOOD_FILE.hash, CONFLICTING.hash, BAD_HASH, "f" * 40)
TEXTS = {
    GOOD_FILE.hash: GOOD_FILE.canonical, CONFLICTING.hash: CONFLICTING.canonical, BAD_HASH: BAD_FILE_TEXT,
}
MOVED = Rescheduled("", 1, 0.0, (), "moved")
NAMES = [UnitName(n) for n in ("u1.service", "u2.service", "u3.service", "t@1.service")]
MACHINES = [MachineID(m) for m in ("m1", "m2", "m3")]
STATES = [TargetState.LAUNCHED, TargetState.LOADED, TargetState.INACTIVE]

name = st.sampled_from(NAMES)
machine = st.sampled_from(MACHINES)
unit_hash = st.sampled_from(HASHES)

# Writes of the right shape (most of them): units, targets, bodies, schedule entries, pins, machines and
# the machine-keyed prefixes, each with a good value or a hostile one.
good_writes = st.one_of(
    st.builds(
        lambda n, h, g, s: (KEYS.unit(n), ks.encode_unit(UnitRecord(n, h, g, s))),
        name, unit_hash, st.booleans(), st.sampled_from(STATES),
    ),
    st.builds(lambda n, s: (KEYS.target(n), s.value), name, st.sampled_from(STATES)),
    st.builds(lambda h: (KEYS.body(h), TEXTS.get(h, GOOD_FILE.canonical)), unit_hash),
    st.builds(
        lambda m, n, h, s: (KEYS.schedule(m) + n, ks.encode_schedule(h, s)),
        machine, name, unit_hash, st.sampled_from(STATES[:2]),
    ),
    st.builds(lambda m, n, h: (KEYS.pin(m, n), ks.encode_pin(h)), machine, name, unit_hash),
    st.builds(lambda m: (KEYS.machine(m), ks.encode_machine(MachineState(m))), machine),
    st.builds(lambda m: (KEYS.machine_metadata(m), ks.encode_metadata({"disk": "ssd"})), machine),
    st.builds(lambda m: (KEYS.cordon(m), ks.encode_cordon(Cordon("x"))), machine),
    st.builds(lambda n, m, h: (KEYS.failed_unit(n, m), records.encode_failed(h)), name, machine, unit_hash),
    st.builds(
        lambda n, h: (KEYS.rescheduled_unit(n), records.encode_rescheduled(replace(MOVED, hash=h))),
        name, unit_hash,
    ),
)
good_keys = good_writes.map(lambda kv: kv[0])
mirrored = tuple(mirrored_prefixes(KEYS))
puts = st.tuples(good_keys, values) | good_writes | st.tuples(keys(KEYS.prefix), values)
operation = puts.map(lambda kv: ("put", *kv)) | good_keys.map(lambda k: ("delete", k, ""))
batches = st.lists(st.lists(operation, min_size=1, max_size=6), min_size=1, max_size=8)


class Store:
    """The mirrored keys as they are after each batch, and what changed in it (as a Mirror gives them)."""

    def __init__(self, decoded: bool) -> None:
        self.decoders = mirror_decoders(KEYS) if decoded else {}
        self.data: dict[str, dict[str, Entry]] = {prefix: {} for prefix in mirrored}
        self.revision = 1
        self.texts: dict[str, str] = {}  # the first text put under each bodies/ key
        self.rewritten = False  # a body key got another text: builders that parsed the first keep it

    def apply(self, batch: list[tuple[str, str, str]]) -> dict[str, dict[str, Entry | None]]:
        changes: dict[str, dict[str, Entry | None]] = {}
        for op, key, value in batch:
            self.revision += 1
            prefix = next((p for p in mirrored if key.startswith(p)), None)
            if prefix is None:
                continue
            if prefix == KEYS.bodies and op == "put":
                self.rewritten |= self.texts.setdefault(key, value) != value
            entry = None if op == "delete" else self._entry(prefix, KeyValue(key, value, 1, self.revision, 1))
            if entry is None:
                self.data[prefix].pop(key, None)
            else:
                self.data[prefix][key] = entry
            changes.setdefault(prefix, {})[key] = entry
        return changes

    def _entry(self, prefix: str, kv: KeyValue) -> Entry:
        decoder = self.decoders.get(prefix)
        if decoder is None:
            return kv
        try:
            record = decoder(kv)
        except ks.BadRecord as exc:
            record = exc
        return Decoded(kv.key, kv.mod_revision, record)


def _full(builder: SnapshotBuilder, store: Store, bodies_revision: int) -> Built:
    d = store.data
    bodies = {k: v for k, v in d[KEYS.bodies].items() if isinstance(v, KeyValue)}
    return builder.build(
        store.revision, machines=d[KEYS.machines], units=d[KEYS.units], targets=d[KEYS.targets],
        bodies=bodies, schedule=d[KEYS.schedules], bodies_revision=bodies_revision,
        cordons=d[KEYS.cordons], metadata=d[KEYS.metadata], failed=d[KEYS.failed],
        rescheduled=d[KEYS.reschedules],
    )


# A bad body shared by several units is reported once, naming the first of them the build looked at.
_SHARED = re.compile(r"^skipping unit \S+: (bad unit file at .*)$", re.DOTALL)


def _problems(built: Built) -> list[str]:
    return sorted(_SHARED.sub(r"skipping a unit: \1", p) for p in built.problems)


def _result(built: Built) -> tuple[object, ...]:
    return built.snapshot, built.referenced, dict(built.unreferenced or {})


def _check(incremental: Built, full: Built, scratch: Built | None) -> None:
    assert _result(incremental) == _result(full)
    if scratch is not None:  # a body is parsed once per hash: a rewritten one is not parsed again
        assert _result(incremental) == _result(scratch)
    assert _problems(incremental) == _problems(full)
    assert len(set(incremental.problems)) == len(incremental.problems)


@settings(max_examples=400, deadline=None)
@given(batches, st.booleans(), st.lists(st.integers(0, 12), min_size=8, max_size=8))
def test_updates_build_what_a_build_from_scratch_builds(
    steps: list[list[tuple[str, str, str]]], decoded: bool, lags: list[int]
) -> None:
    store = Store(decoded)
    incremental = SnapshotBuilder(KEYS, parse_unit_body)
    full = SnapshotBuilder(KEYS, parse_unit_body)
    for batch, lag in zip(steps, lags, strict=False):
        changes = store.apply(batch)
        bodies_revision = max(0, store.revision - lag)  # bodies/ may lag behind units/
        built = incremental.update(store.revision, changes, bodies_revision=bodies_revision)
        fresh = SnapshotBuilder(KEYS, parse_unit_body)
        scratch = None if store.rewritten else _full(fresh, store, bodies_revision)
        _check(built, _full(full, store, bodies_revision), scratch)


def _unit_writes(n: UnitName, file: UnitFile, m: MachineID) -> dict[str, str]:
    return {
        KEYS.unit(n): ks.encode_unit(UnitRecord(n, file.hash, False, TargetState.LAUNCHED)),
        KEYS.target(n): TargetState.LAUNCHED.value,
        KEYS.body(file.hash): file.canonical,
        KEYS.schedule(m) + n: ks.encode_schedule(file.hash, TargetState.LAUNCHED),
    }


def _as_changes(writes: Mapping[str, str | None], revision: int) -> dict[str, dict[str, Entry | None]]:
    changes: dict[str, dict[str, Entry | None]] = {}
    for key, value in writes.items():
        prefix = next(p for p in mirrored if key.startswith(p))
        changes.setdefault(prefix, {})[key] = None if value is None else KeyValue(key, value, 1, revision, 1)
    return changes


def test_a_destroyed_unit_leaves_its_body_unreferenced_and_a_snapshot_handed_out_unchanged() -> None:
    builder = SnapshotBuilder(KEYS, parse_unit_body)
    writes = {
        **_unit_writes(NAMES[0], GOOD_FILE, MACHINES[0]),
        KEYS.machine(MACHINES[0]): ks.encode_machine(MachineState(MACHINES[0])),
    }
    first = builder.update(2, _as_changes(writes, 2), bodies_revision=2)
    assert list(first.snapshot.units) == [NAMES[0]] and first.unreferenced == {}
    gone = builder.update(3, _as_changes({KEYS.unit(NAMES[0]): None, KEYS.target(NAMES[0]): None}, 3),
                          bodies_revision=3)
    assert list(gone.snapshot.units) == [] and list(first.snapshot.units) == [NAMES[0]]
    assert list(gone.snapshot.schedule) == [NAMES[0]]  # the planner unschedules it
    assert gone.unreferenced == {}  # its schedule entry still references the body
    entry = KEYS.schedule(MACHINES[0]) + NAMES[0]
    unscheduled = builder.update(4, _as_changes({entry: None}, 4), bodies_revision=4)
    assert unscheduled.unreferenced == {GOOD_FILE.hash: 2} and unscheduled.referenced == frozenset()
