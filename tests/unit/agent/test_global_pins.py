"""Hash pins (schedule/<machine>/pin/<unit>): a Global unit pinned on this machine runs at the pinned hash."""

from __future__ import annotations

import logging

import pytest

from fleetd.agent.plan import TaskKind
from fleetd.model import TargetState, UnitName
from fleetd.registry import keyspace as ks
from tests.unit.agent.test_agent_shell import KEYS, M1, Cluster, body, run

MON = UnitName("mon.service")
V1, V2 = body("mon v1", "[X-Fleet]\nGlobal=true\n"), body("mon v2", "[X-Fleet]\nGlobal=true\n")


async def _pin(c: Cluster, unit_hash: str, machine: str = M1, value: str | None = None) -> None:
    revision = await c.store.put(KEYS.pin(machine, MON), ks.encode_pin(unit_hash) if value is None else value)
    if machine == M1:
        c._written[KEYS.schedule(M1)] = revision


async def _unpin(c: Cluster) -> None:
    await c.store.delete(KEYS.pin(M1, MON))
    c._written[KEYS.schedule(M1)] = c.store.revision


def test_a_pinned_global_unit_keeps_its_pinned_hash_until_the_pin_is_removed() -> None:
    async def scenario(c: Cluster) -> None:
        await c.put_global(MON, V1, TargetState.LAUNCHED)
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        await _pin(c, V1.hash)
        await c.put_global(MON, V2, TargetState.LAUNCHED)
        assert await c.pass_() == ()  # pinned at v1: the new globals/ hash is not run here
        assert c.units.files()[MON] == V1.canonical
        await _unpin(c)
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert c.units.files()[MON] == V2.canonical

    run(scenario)


def test_a_pin_back_to_the_old_hash_restores_it_and_pins_elsewhere_do_not_apply() -> None:
    async def scenario(c: Cluster) -> None:
        await c.store.put(KEYS.body(V1.hash), V1.canonical)
        await _pin(c, V1.hash, machine="m2")  # another machine's pin
        await c.put_global(MON, V2, TargetState.LAUNCHED)
        await c.pass_()
        assert c.units.files()[MON] == V2.canonical
        await _pin(c, V1.hash)  # a roll back re-pins this machine to the old hash
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert c.units.files()[MON] == V1.canonical

    run(scenario)


def test_a_hostile_pin_is_reported_once_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(c: Cluster) -> None:
        await c.put_global(MON, V2, TargetState.LAUNCHED)
        await _pin(c, "", value='{"hash": 7}')
        with caplog.at_level(logging.WARNING):
            await c.pass_()
            await c.pass_()
        assert c.units.files()[MON] == V2.canonical
        assert caplog.text.count("field 'hash' must be a string") == 1
        await _pin(c, "", value="\udcff")  # bytes that are not UTF-8
        assert await c.pass_() == ()

    run(scenario)
