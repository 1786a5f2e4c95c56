"""Global units follow this machine's live metadata (``metadata/<own-id>``), read by the agent, merged over
its configured metadata; hostile entries are ignored and reported once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleetd.agent.own_metadata import OwnMetadata, overrides_of
from fleetd.errors import RegistryUnavailable
from fleetd.metadata import REMOVED, MetadataChange
from fleetd.model import MachineState, TargetState
from fleetd.registry.keyspace import BadRecord
from fleetd.registry.kv import KeyValue
from fleetd.registry.memory import MemoryKV
from tests.unit.agent.test_agent_shell import KEYS, M1, Cluster, body, run

DBMON = "dbmon.service"
WEBMON = "webmon.service"


def kv(value: str) -> KeyValue:
    return KeyValue(KEYS.machine_metadata(M1), value, 5, 5, 1, 0)


def test_overrides_of_an_absent_a_good_and_a_bad_entry() -> None:
    assert overrides_of(None) == {}
    assert overrides_of(kv('{"overrides": {"role": "db", "disk": ""}}')) == {"role": "db", "disk": REMOVED}
    for bad in ("not json", '{"overrides": []}', '{"overrides": {"a=b": "c"}}', '{"overrides": {"k": 1}}'):
        assert isinstance(overrides_of(kv(bad)), BadRecord), bad


async def put_globals(c: Cluster) -> None:
    for name, role in ((DBMON, "db"), (WEBMON, "web")):
        unit = body(name, f"[X-Fleet]\nGlobal=true\nMachineMetadata=role={role}\n")
        await c.put_global(name, unit, TargetState.LAUNCHED)


async def set_live(c: Cluster, **values: str) -> None:
    await c.registry.patch_metadata([MetadataChange(M1, key, value) for key, value in values.items()])


def test_global_units_start_and_stop_as_live_metadata_is_set_and_reset() -> None:
    async def scenario(c: Cluster) -> None:
        await put_globals(c)
        await c.pass_()
        assert set(c.units.loaded_units()) == {WEBMON}  # configured role=web
        await set_live(c, role="db")
        assert await c.agent.own_metadata.refresh()
        await c.pass_()
        assert set(c.units.loaded_units()) == {DBMON}
        assert ("start", DBMON) in c.units.calls
        await set_live(c, role=REMOVED)  # unset: hides the configured role too
        assert await c.agent.own_metadata.refresh()
        await c.pass_()
        assert set(c.units.loaded_units()) == set()
        await c.store.delete(KEYS.machine_metadata(M1))  # no overrides: the configured role=web again
        assert await c.agent.own_metadata.refresh()
        assert not await c.agent.own_metadata.refresh()  # nothing new
        await c.pass_()
        assert set(c.units.loaded_units()) == {WEBMON}
        assert c.agent.machine.metadata == {"role": "web"}  # the registered record stays the configured one

    run(scenario)


def test_the_first_pass_reads_live_metadata_before_planning() -> None:
    async def scenario(c: Cluster) -> None:
        await set_live(c, role="db")
        await put_globals(c)
        await c.pass_()
        assert set(c.units.loaded_units()) == {DBMON}
        assert not any(call == ("load", WEBMON) for call in c.units.calls)

    run(scenario)


def test_a_hostile_entry_is_reported_once_and_the_configured_metadata_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(c: Cluster) -> None:
        await put_globals(c)
        await set_live(c, role="db")
        await c.pass_()
        assert set(c.units.loaded_units()) == {DBMON}
        await c.store.put(KEYS.machine_metadata(M1), '{"overrides": {"role": "a,b"}}')
        with caplog.at_level(logging.WARNING, logger="fleetd.agent.own_metadata"):
            assert await c.agent.own_metadata.refresh()
            assert not await c.agent.own_metadata.refresh()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("ignoring live metadata: "), warnings
        assert KEYS.machine_metadata(M1) in warnings[0]
        await c.pass_()
        assert set(c.units.loaded_units()) == {WEBMON}

    run(scenario)


def test_the_loop_wakes_the_agent_on_a_change_and_rides_out_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        store = MemoryKV()
        key = KEYS.machine_metadata(M1)
        ticks: asyncio.Queue[None] = asyncio.Queue()
        down = False

        async def get(k: str) -> KeyValue | None:
            if down:
                raise RegistryUnavailable("etcd cluster is unavailable or misconfigured (injected)")
            return await MemoryKV.get(store, k)

        store.get = get  # type: ignore[method-assign]
        own = OwnMetadata(store, key, M1, interval=10.0)
        own.needed = True  # a Global unit with MachineMetadata is wanted
        woken: list[dict[str, str]] = []

        async def tick(seconds: float) -> None:
            assert seconds == 10.0
            await ticks.get()

        async def step() -> None:
            ticks.put_nowait(None)
            for _ in range(20):
                await asyncio.sleep(0)

        task = asyncio.create_task(own.run(lambda: woken.append(dict(own.overrides)), tick))
        try:
            await step()
            assert woken == []  # nothing stored: nothing changed
            await store.put(key, '{"overrides": {"role": "db"}}')
            await step()
            assert woken == [{"role": "db"}]
            assert own.machine(MachineState(M1, "", {"role": "web", "az": "1"})).metadata == {
                "role": "db", "az": "1"}
            down = True
            with caplog.at_level(logging.WARNING, logger="fleetd.agent.own_metadata"):
                await step()
                await step()
            assert [r.getMessage() for r in caplog.records].count(
                "reading this machine's live metadata failed (etcd cluster is unavailable or misconfigured"
                " (injected)); retrying") == 1
            assert own.overrides == {"role": "db"}  # the last read holds through the outage
            down = False
            await store.delete(key)
            await step()
            assert woken == [{"role": "db"}, {}]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()

    asyncio.run(main())


def test_nothing_is_read_while_no_global_unit_has_machine_metadata() -> None:
    async def main() -> None:
        store = MemoryKV()
        reads = 0
        original = store.get

        async def get(k: str) -> KeyValue | None:
            nonlocal reads
            reads += 1
            return await original(k)

        store.get = get  # type: ignore[method-assign]
        own = OwnMetadata(store, KEYS.machine_metadata(M1), M1, interval=10.0)
        ticks: asyncio.Queue[None] = asyncio.Queue()

        async def tick(_seconds: float) -> None:
            await ticks.get()

        task = asyncio.create_task(own.run(lambda: None, tick))
        try:
            for needed, expected in ((False, 0), (False, 0), (True, 1), (True, 2), (False, 2)):
                own.needed = needed
                ticks.put_nowait(None)
                for _ in range(20):
                    await asyncio.sleep(0)
                assert reads == expected
            assert not own.ready  # read again before the next pass that needs it
        finally:
            task.cancel()

    asyncio.run(main())
