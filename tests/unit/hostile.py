"""Hostile registry data for the property suites: anything anyone with etcd access could write, and a small
engine + agent cluster on MemoryKV that is driven pass by pass until it is idle.

Values reach fleet as ``str``: EtcdKV decodes bytes with ``surrogateescape``, so bytes that are not UTF-8
arrive as lone surrogates; ``raw_bytes`` produces exactly those strings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from fleetd.agent.agent import Agent
from fleetd.engine.engine import Engine
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.kv import KV, Compare, KeyValue, Op, Put, TxnResult
from fleetd.registry.memory import MemoryKV
from fleetd.registry.mirror import Mirror
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.systemd.fake import FakeUnitManager
from fleetd.unitfile.unit import UnitFile

M1 = MachineID("m1")
GOOD = UnitName("good.service")
GOOD_GLOBAL = UnitName("everywhere.service")
GOOD_FILE = UnitFile.from_text("[Unit]\nDescription=good\n\n[Service]\nExecStart=/bin/sleep 1000\n")
GLOBAL_FILE = UnitFile.from_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n")
BAD_HASH = "ba" * 20  # a valid hash whose body the garbage may provide
HASHES = (GOOD_FILE.hash, GLOBAL_FILE.hash, BAD_HASH, "f" * 40)

DEEP_LIST = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"hash":' * 10_000 + "1" + "}" * 10_000
HUGE_NUMBER = "9" * 5_000

# Names that are not valid unit names or machine IDs, and some that are.
BAD_NAMES = (
    "a/b.service",
    "bad name.service",
    "",
    "..",
    ".",
    "x" * 300 + ".service",
    "caf\udce9.service",
    "\ud800.service",
    "foo@.slice",
    "@a.service",
    "a.nosuchtype",
    "a.service/",
    "-",
)
GOOD_NAMES = ("x.service", "y@1.service", "y@.service", "m1", "m2", "0123456789abcdef")


def raw_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Records of the right shape with fields drawn from right, wrong and hostile values.
fields = st.one_of(
    st.sampled_from(HASHES),
    st.sampled_from(["launched", "loaded", "inactive", "running", "", "\udcff"]),
    st.booleans(),
    st.text(max_size=8),
    json_values,
)
records = st.dictionaries(
    st.sampled_from(["hash", "state", "global", "id", "metadata", "public_ip", "load", "active", "sub"]),
    fields,
    max_size=6,
).map(lambda obj: json.dumps(obj, ensure_ascii=False))
unit_texts = st.sampled_from(
    [
        GOOD_FILE.canonical,
        "[Service]\nExecStart=/bin/\udcff\n",  # not UTF-8
        "[X-Fleet]\nMachineOf=\n",
        "[X-Fleet]\nConflicts=a/b\n",
        "[Service\n",
        "[Unit]\n" + "Description=x\\\n" * 2_000,
        "[X-Fleet]\nGlobal=maybe\n",
    ]
)
values = st.one_of(
    json_values.map(json.dumps),
    records,
    unit_texts,
    st.binary(max_size=40).map(raw_bytes),
    st.text(max_size=20),
    st.sampled_from([DEEP_LIST, DEEP_OBJECT, HUGE_NUMBER, f'{{"hash":{HUGE_NUMBER}}}', '"\\ud800"']),
)
names = st.sampled_from(BAD_NAMES + GOOD_NAMES) | st.text(max_size=10) | st.binary(max_size=8).map(raw_bytes)
SEGMENTS = ("machines/", "units/", "targets/", "bodies/", "globals/", "schedule/", "states/")


@st.composite
def keys(draw: st.DrawFn, prefix: str) -> str:
    """A key under ``prefix``: in any record's place (good or bad names), a single key, or anything."""
    kind = draw(st.sampled_from(["leaf", "pair", "single", "any"]))
    if kind == "single":
        return prefix + draw(st.sampled_from(["schema", "engine/leader", "engine/x", "", "unknown"]))
    if kind == "any":
        return prefix + draw(st.sampled_from(SEGMENTS) | st.just("")) + draw(names)
    if kind == "pair":
        segment = draw(st.sampled_from(["schedule/", "states/"]))
        return f"{prefix}{segment}{draw(names)}/{draw(names)}"
    segment = draw(st.sampled_from(SEGMENTS))
    leaf = draw(st.sampled_from(HASHES) | names) if segment == "bodies/" else draw(names)
    return prefix + segment + leaf


def garbage(prefix: str, protected: Sequence[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """(key, value) writes under ``prefix``, never over the ``protected`` keys of the good units."""
    pairs = st.tuples(keys(prefix), values).filter(lambda kv: kv[0] not in protected)
    return st.lists(pairs, min_size=1, max_size=8)


class RecordingKV(MemoryKV):
    """MemoryKV that keeps every key a Txn put (what the engine and the agents wrote)."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: 0.0)
        self.txn_puts: list[Put] = []

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        result = await super().txn(compares, success, failure)
        ops = success if result.succeeded else failure
        self.txn_puts.extend(op for op in ops if isinstance(op, Put))
        return result


class Warnings(logging.Handler):
    """Every WARNING (and worse) logged under ``fleetd``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")  # each reader reports once


@dataclass
class Outcome:
    idle_revision: int
    after_two_more: int
    passes: int
    schedule: dict[UnitName, tuple[MachineID, str]] = field(default_factory=dict)  # -> (machine, hash)
    loaded: dict[UnitName, str] = field(default_factory=dict)  # unit -> text on m1
    started: set[UnitName] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    engine_puts: list[str] = field(default_factory=list)


PREFIX = "/h/"
KEYS = ks.Keyspace(PREFIX)
PROTECTED = (
    KEYS.machine(M1),
    KEYS.unit(GOOD),
    KEYS.target(GOOD),
    KEYS.unit(GOOD_GLOBAL),
    KEYS.target(GOOD_GLOBAL),
    KEYS.global_unit(GOOD_GLOBAL),
    KEYS.body(GOOD_FILE.hash),
    KEYS.body(GLOBAL_FILE.hash),
)


async def mirrored(kv: KV, mirrors: Sequence[Mirror]) -> None:
    """Wait until every mirror holds exactly what the store holds (writes and deletes delivered)."""

    def same(mirror: Mirror, prefix: str, live: Sequence[KeyValue]) -> bool:
        return {k: v.mod_revision for k, v in mirror.entries(prefix).items()} == {
            kv.key: kv.mod_revision for kv in live
        }

    async with asyncio.timeout(5):
        while True:
            checks = [
                same(m, p, (await kv.range(p)).kvs) for m in mirrors for p in m.prefixes
            ]
            if all(checks):
                return
            await asyncio.sleep(0.001)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def run_cluster(writes: Sequence[tuple[str, str]], *, max_passes: int = 8) -> Outcome:
    """Good units + ``writes`` on one store; engine and agent (m1) passes until idle, then two more."""
    handler = Warnings()
    fleetd_logger = logging.getLogger("fleetd")
    fleetd_logger.addHandler(handler)
    kv = RecordingKV()
    tasks: list[asyncio.Task[None]] = []
    try:
        registry = Registry(kv, PREFIX)
        await registry.ensure_schema()
        await registry.put_units(
            [
                (UnitRecord(GOOD, GOOD_FILE.hash, False, TargetState.LAUNCHED), GOOD_FILE.canonical),
                (
                    UnitRecord(GOOD_GLOBAL, GLOBAL_FILE.hash, True, TargetState.LAUNCHED),
                    GLOBAL_FILE.canonical,
                ),
            ]
        )
        units = FakeUnitManager()
        agent = Agent(
            Registry(kv, PREFIX), units, MachineState(M1, "10.0.0.1"), ttl=1e6, sleep=no_sleep, settle=0.0
        )
        await agent.register()
        engine = Engine(kv, M1, prefix=PREFIX, ttl=1e6)
        tasks += [
            asyncio.create_task(engine.election.run()),
            asyncio.create_task(agent.mirror.run()),
        ]
        async with asyncio.timeout(5):
            while not engine.is_leader:  # noqa: ASYNC110 - the election has no event for "won"
                await asyncio.sleep(0.001)
        engine_mirror = engine.open_mirror()  # as the engine's loop does on winning; passes are driven here
        tasks.append(asyncio.create_task(engine_mirror.run()))
        await engine_mirror.ready.wait()
        for key, value in writes:
            await kv.put(key, value)
        kv.txn_puts.clear()

        async def one_pass() -> None:
            await mirrored(kv, [engine_mirror, agent.mirror])
            await engine.reconcile()
            await mirrored(kv, [engine_mirror, agent.mirror])
            await agent.reconcile()
            await agent.publish()

        passes = 0
        revision = -1
        while revision != kv.revision and passes < max_passes:
            revision = kv.revision
            await one_pass()
            passes += 1
        idle = kv.revision
        await one_pass()
        await one_pass()
        schedule = {
            name: (entry.machine_id, entry.hash)
            for name, entries in (await registry.list_schedule()).items()
            for entry in entries
        }
        started = {name for name, state in (await units.states(sorted(units.files()))).items()
                   if state.active_state == "active"}
        return Outcome(
            idle,
            kv.revision,
            passes,
            schedule,
            dict(units.files()),
            started,
            handler.messages,
            [put.key for put in kv.txn_puts],
        )
    finally:
        fleetd_logger.removeHandler(handler)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kv.close()
