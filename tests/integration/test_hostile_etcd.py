"""Hostile data on real etcd: bytes that are not UTF-8, deep JSON and bad names, written with the client as
anyone with etcd access could, next to a good unit. An engine pass and the registry reads fleetctl uses
carry on, the good unit is scheduled, and the idle cluster writes nothing more."""

from __future__ import annotations

import asyncio

from fleetd.engine.engine import Engine
from fleetd.model import MachineState, TargetState, UnitState
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.registry import Registry, UnitRecord
from tests.unit.hostile import DEEP_LIST, DEEP_OBJECT, GOOD, GOOD_FILE, HUGE_NUMBER, M1, mirrored

BAD_HASH = "ba" * 20


def garbage(prefix: str) -> list[tuple[str, bytes]]:
    not_utf8 = b"\xff\xfe\x80 not utf-8 \xc3"
    return [
        (f"{prefix}units/x.service", f'{{"global":false,"hash":"{BAD_HASH}"}}'.encode()),
        (f"{prefix}targets/x.service", b"launched"),
        (f"{prefix}bodies/{BAD_HASH}", b"[Service]\nExecStart=/bin/" + not_utf8 + b"\n"),
        (f"{prefix}units/a/b.service", f'{{"global":false,"hash":"{GOOD_FILE.hash}"}}'.encode()),
        (f"{prefix}targets/a/b.service", b"launched"),
        (f"{prefix}units/bad name.service", not_utf8),
        (f"{prefix}machines/m2", DEEP_LIST.encode()),
        (f"{prefix}machines/\udcff", b"{}"),
        (f"{prefix}schedule/m1/y.service", DEEP_OBJECT.encode()),
        (f"{prefix}globals/bad name.service", HUGE_NUMBER.encode()),
        (f"{prefix}states/good.service/m1", not_utf8),
        (f"{prefix}states/a/b/c", b"{}"),
        (f"{prefix}bodies/zz", not_utf8),
    ]


def test_engine_pass_and_registry_reads_survive_raw_bytes(
    aio: asyncio.Runner, etcd_kv: EtcdKV, etcd_prefix: str
) -> None:
    async def scenario() -> None:
        registry = Registry(etcd_kv, etcd_prefix)
        lease = await etcd_kv.grant(60)
        await registry.register_machine(MachineState(M1, "10.0.0.1"), lease)
        await registry.put_units(
            [(UnitRecord(GOOD, GOOD_FILE.hash, False, TargetState.LAUNCHED), GOOD_FILE.canonical)]
        )
        for key, value in garbage(etcd_prefix):
            # EtcdKV hands bytes over as surrogate-escaped text, and writes such text back as those bytes.
            await etcd_kv.put(key, value.decode("utf-8", "surrogateescape"))
        raw = await etcd_kv.get(f"{etcd_prefix}bodies/{BAD_HASH}")
        assert raw is not None and "\udcff" in raw.value

        engine = Engine(etcd_kv, M1, prefix=etcd_prefix, ttl=10.0)
        tasks = [asyncio.create_task(engine.election.run())]
        try:
            async with asyncio.timeout(10):
                while not engine.is_leader:  # noqa: ASYNC110 - the election has no event for "won"
                    await asyncio.sleep(0.02)
            mirror = engine.open_mirror()  # as the engine's loop does on winning; passes are driven here
            tasks.append(asyncio.create_task(mirror.run()))
            for _ in range(3):
                await mirrored(etcd_kv, [mirror])
                await engine.reconcile()
            idle = (await etcd_kv.range(etcd_prefix)).revision
            for _ in range(2):
                await mirrored(etcd_kv, [mirror])
                await engine.reconcile()
            assert (await etcd_kv.range(etcd_prefix)).revision == idle, "write loop on an idle cluster"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.election.resign()

        schedule = await registry.list_schedule()
        assert sorted(schedule) == [GOOD], schedule
        assert [(e.machine_id, e.hash) for e in schedule[GOOD]] == [(M1, GOOD_FILE.hash)]
        assert [u.name for u in await registry.list_units()] == [GOOD, "x.service"]  # its body is bad
        assert [m.id for m in await registry.list_machines()] == [M1]
        assert await registry.get_bodies([BAD_HASH, GOOD_FILE.hash]) == {GOOD_FILE.hash: GOOD_FILE.canonical}
        assert await registry.list_unit_states() == ()
        assert set(await registry.get_units(["x.service", "bad name.service", GOOD])) == {
            "x.service",  # its record is fine; its body is the problem (the engine does not place it)
            GOOD,
        }
        await registry.publish_state(
            UnitState(GOOD, M1, "loaded", "active", "running", GOOD_FILE.hash, TargetState.LAUNCHED), lease
        )
        assert [s.name for s in await registry.list_unit_states([GOOD])] == [GOOD]

    aio.run(scenario())
