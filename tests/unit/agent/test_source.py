"""The agent's desired source: a wake-up decodes and builds only the entries changed since the last read."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from fleetd.agent import source as source_module
from fleetd.agent.source import DesiredSource
from fleetd.model import MachineID, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.registry.snapshot import ScheduledUnit
from fleetd.unitfile.body import RequirementsFor, body_requirements
from fleetd.unitfile.unit import UnitFile

MACHINE = MachineID("0" * 31 + "a")


class Counted:
    """Counts schedule decodes and requirement expansions (per unit name) done by the source."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decodes: Counter[str] = Counter()
        self.expansions: Counter[str] = Counter()
        decode = ks.decode_schedule

        def counting_decode(key: str, text: str, machine_id: MachineID) -> ScheduledUnit:
            self.decodes[key.rsplit("/", 1)[-1]] += 1
            return decode(key, text, machine_id)

        def counting_requirements(text: str) -> RequirementsFor:
            expand = body_requirements(text)

            def for_name(name: UnitName) -> object:
                self.expansions[name] += 1
                return expand(name)

            return for_name  # type: ignore[return-value]

        monkeypatch.setattr(ks, "decode_schedule", counting_decode)
        monkeypatch.setattr(source_module, "body_requirements", counting_requirements)


async def _schedule(registry: Registry, name: str, description: str, state: TargetState) -> int:
    """Submit ``name`` with a body and schedule it here in ``state``; the revision written."""
    text = f"[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/true\n"
    unit = UnitFile.from_text(text)
    await registry.put_units(
        [(UnitRecord(UnitName(name), unit.hash, False, TargetState.LAUNCHED), unit.canonical)]
    )
    key = registry.keys.scheduled(MACHINE, name)
    return await registry.kv.put(key, ks.encode_schedule(unit.hash, state))


@contextlib.asynccontextmanager
async def _source() -> AsyncIterator[tuple[Registry, DesiredSource]]:
    kv = MemoryKV()
    registry = Registry(kv, "/_coreos.com/fleet/")
    await registry.ensure_schema()
    source = DesiredSource(registry, MACHINE)
    follow = asyncio.create_task(source.mirror.run())
    try:
        yield registry, source
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow


async def _seen(source: DesiredSource, revision: int) -> None:
    async with asyncio.timeout(10):
        await source.mirror.ready.wait()
        while source.mirror.revision < revision:
            source.mirror.changed.clear()
            await source.mirror.changed.wait()


def test_a_wake_up_decodes_and_builds_only_the_entries_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(monkeypatch)

    async def scenario() -> None:
        async with _source() as (registry, source):
            for i in range(20):
                revision = await _schedule(registry, f"u{i}.service", f"u{i}", TargetState.LAUNCHED)
            await _seen(source, revision)
            first = await source.read()
            assert len(first.scheduled) == 20
            assert set(counted.decodes.values()) == {1} and set(counted.expansions.values()) == {1}

            again = await source.read()  # nothing changed: nothing decoded or expanded again
            assert sum(counted.decodes.values()) == 20 and sum(counted.expansions.values()) == 20
            assert again.scheduled == first.scheduled

            # One entry's state changes, another's body: each is decoded and built again, the rest not.
            await _seen(source, await _schedule(registry, "u1.service", "u1", TargetState.LOADED))
            await _seen(source, await _schedule(registry, "u2.service", "u2 changed", TargetState.LAUNCHED))
            changed = await source.read()
            assert counted.decodes["u1.service"] == 2 and counted.decodes["u2.service"] == 2
            assert counted.expansions["u1.service"] == 2 and counted.expansions["u2.service"] == 2
            assert sum(counted.decodes.values()) == 22 and sum(counted.expansions.values()) == 22
            assert changed.scheduled[UnitName("u1.service")].target_state is TargetState.LOADED
            assert (
                changed.scheduled[UnitName("u2.service")].hash != first.scheduled[UnitName("u2.service")].hash
            )
            assert changed.scheduled[UnitName("u3.service")] is first.scheduled[UnitName("u3.service")]

            # A removed entry is gone from the next read and from what is kept.
            key = registry.keys.scheduled(MACHINE, "u4.service")
            await registry.kv.delete(key)
            await _seen(source, (await registry.kv.range(key)).revision)
            assert UnitName("u4.service") not in (await source.read()).scheduled
            assert key not in source._decoded

    asyncio.run(scenario())


def test_a_cached_unit_is_not_used_when_its_body_is_gone() -> None:
    async def scenario() -> None:
        async with _source() as (registry, source):
            await _seen(source, await _schedule(registry, "a.service", "a", TargetState.LAUNCHED))
            first = await source.read()
            unit = first.scheduled[UnitName("a.service")]
            source.keep_only([])  # the body dropped from the cache (no desired unit used it)...
            await registry.kv.delete(registry.keys.body(unit.hash))  # ...and from etcd
            later = await source.read()
            assert later.scheduled == {} and later.skipped == frozenset({UnitName("a.service")})

    asyncio.run(scenario())
