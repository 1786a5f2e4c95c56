"""The engine shell on MemoryKV: election, scheduling, reactions, machine loss, bad data, deposition."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import pytest

from fleetd.engine.election import Election
from fleetd.engine.engine import Engine
from fleetd.engine.plan import EnginePlan, Schedule
from fleetd.errors import CASConflict
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.cordons import Cordons
from fleetd.registry.keyspace import Cordon
from fleetd.registry.memory import MemoryKV
from fleetd.registry.reasons import Reasons, Reschedules
from fleetd.registry.registry import Registry, UnitRecord
from fleetd.unitfile.unit import UnitFile

P = "/t/"
TTL = 1.0


def unit_file(extra: str = "") -> UnitFile:
    return UnitFile.from_text(f"[Service]\nExecStart=/bin/sleep 1000\n{extra}")


async def submit(
    reg: Registry, name: str, extra: str = "", state: TargetState = TargetState.LAUNCHED
) -> None:
    uf = unit_file(extra)
    is_global = "Global=true" in extra
    await reg.put_units([(UnitRecord(UnitName(name), uf.hash, is_global, state), uf.canonical)])


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Poll an async predicate with a deadline."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - registry reads, no event to wait on
            await asyncio.sleep(0.01)


async def placement(reg: Registry) -> dict[str, list[str]]:
    return {
        name: sorted(e.machine_id for e in entries) for name, entries in (await reg.list_schedule()).items()
    }


class Cluster:
    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        self.reg = Registry(kv, P)
        self.engines: dict[str, tuple[Engine, asyncio.Task[None]]] = {}
        self.machine_leases: dict[str, int] = {}

    def start_engine(self, machine_id: str, interval: float = 30.0) -> Engine:
        engine = Engine(self.kv, machine_id, prefix=P, interval=interval, ttl=TTL, grace=TTL)
        self.engines[machine_id] = (engine, asyncio.create_task(engine.run()))
        return engine

    async def stop_engine(self, machine_id: str) -> None:
        _engine, task = self.engines.pop(machine_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def add_machine(self, machine_id: str, **metadata: str) -> None:
        lease = await self.kv.grant(60)
        self.machine_leases[machine_id] = lease
        await self.reg.register_machine(MachineState(MachineID(machine_id), metadata=metadata), lease)

    def leaders(self) -> list[str]:
        return [mid for mid, (engine, _task) in self.engines.items() if engine.is_leader]

    async def one_leader(self) -> Engine:
        async def elected() -> bool:
            return len(self.leaders()) == 1

        await eventually(elected)
        return self.engines[self.leaders()[0]][0]


def run(test: Callable[[Cluster], Awaitable[None]]) -> None:
    async def main() -> None:
        kv = MemoryKV()
        cluster = Cluster(kv)
        try:
            await test(cluster)
        finally:
            for machine_id in list(cluster.engines):
                await cluster.stop_engine(machine_id)
            await kv.close()

    asyncio.run(main())


def test_exactly_one_of_several_engines_leads_and_a_graceful_stop_hands_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fleetd.engine")

    async def t(c: Cluster) -> None:
        for machine_id in ("m1", "m2", "m3"):
            c.start_engine(machine_id)
        leader = await c.one_leader()
        assert (await c.kv.get("/t/engine/leader")).value == leader.machine_id  # type: ignore[union-attr]
        await c.stop_engine(leader.machine_id)
        successor = await c.one_leader()  # the released key wakes the others at once, no TTL wait
        assert successor.machine_id != leader.machine_id
        assert "Engine leadership changed from" in caplog.text

    run(t)


def test_standby_engines_watch_the_leader_key_only_and_hold_no_registry_copy() -> None:
    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        await submit(c.reg, "a.service")
        engines = [c.start_engine(machine_id, interval=0.05) for machine_id in ("m1", "m2", "m3")]
        leader = await c.one_leader()
        await eventually(lambda: _true(leader.mirror is not None and leader.mirror.ready.is_set()))
        standbys = [engine for engine in engines if engine is not leader]
        assert all(engine.mirror is None for engine in standbys)
        prefixes = len(leader.mirror.prefixes)  # type: ignore[union-attr]
        # one leader-key watch each, and the leader's mirror (its watches open just after its listing)
        await eventually(lambda: _true(c.kv.watchers == len(engines) + prefixes))
        await c.stop_engine(leader.machine_id)
        successor = await c.one_leader()
        assert leader.mirror is None  # dropped with its term
        await eventually(lambda: _true(successor.mirror is not None and successor.mirror.ready.is_set()))
        await eventually(lambda: _true(c.kv.watchers == len(engines) - 1 + prefixes))
        assert await placement(c.reg) == {"a.service": ["m1"]}

    run(t)


def test_an_idle_leader_skips_passes_until_the_registry_changes() -> None:
    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        await submit(c.reg, "a.service")
        engine = c.start_engine("m1", interval=0.01)
        await c.one_leader()
        await eventually(lambda: _true(engine.skipped >= 3))  # settled: ticks find nothing new
        passes, revision = engine.passes, c.kv.revision
        await eventually(lambda: _true(engine.skipped >= 20))
        assert (engine.passes, c.kv.revision) == (passes, revision)
        await submit(c.reg, "b.service")
        await eventually(lambda: _true(engine.passes > passes))
        assert await placement(c.reg) == {"a.service": ["m1"], "b.service": ["m1"]}

    run(t)


async def _true(value: bool) -> bool:
    return value


def test_schedules_units_and_reacts_to_new_ones_without_waiting_for_the_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fleetd.engine")

    async def t(c: Cluster) -> None:
        await c.add_machine("aaaaaaaa0001", role="web")
        await c.add_machine("bbbbbbbb0002", role="db")
        await submit(c.reg, "web.service", "[X-Fleet]\nMachineMetadata=role=web\n")
        await submit(c.reg, "loaded.service", state=TargetState.LOADED)
        await submit(c.reg, "idle.service", state=TargetState.INACTIVE)
        await submit(c.reg, "all.service", "[X-Fleet]\nGlobal=true\n")
        c.start_engine("aaaaaaaa0001", interval=60.0)
        await c.one_leader()

        async def scheduled() -> bool:
            return set(await placement(c.reg)) == {"web.service", "loaded.service"}

        await eventually(scheduled)
        schedule = await c.reg.machine_schedule("aaaaaaaa0001")
        assert schedule[UnitName("web.service")].state is TargetState.LAUNCHED
        loaded = (await c.reg.list_schedule())[UnitName("loaded.service")][0]
        assert loaded.state is TargetState.LOADED
        assert 'action=schedule unit=web.service machine=aaaaaaaa state=launched reason="' in caplog.text

        await submit(c.reg, "db.service", "[X-Fleet]\nMachineMetadata=role=db\n")  # the watch wakes it

        async def db_placed() -> bool:
            return (await placement(c.reg)).get("db.service") == ["bbbbbbbb0002"]

        await eventually(db_placed, seconds=3.0)
        await c.reg.set_target_states({"web.service": TargetState.INACTIVE})

        async def web_gone() -> bool:
            return "web.service" not in await placement(c.reg)

        await eventually(web_gone, seconds=3.0)
        assert "action=unschedule unit=web.service machine=aaaaaaaa" in caplog.text

    run(t)


def test_units_of_a_machine_whose_lease_is_revoked_are_replaced_honouring_constraints() -> None:
    async def t(c: Cluster) -> None:
        for machine_id, role in (("m1", "web"), ("m2", "web"), ("m3", "db")):
            await c.add_machine(machine_id, role=role)
        await submit(c.reg, "web.service", "[X-Fleet]\nMachineMetadata=role=web\n")
        c.start_engine("m3")
        await c.one_leader()

        async def placed() -> bool:
            return len((await placement(c.reg)).get("web.service", [])) == 1

        await eventually(placed)
        first = (await placement(c.reg))["web.service"][0]
        await c.kv.revoke(c.machine_leases[first])
        other = "m2" if first == "m1" else "m1"

        async def moved() -> bool:
            return (await placement(c.reg)).get("web.service") == [other]

        await eventually(moved, seconds=3.0)

    run(t)


def test_machines_vanishing_together_are_held_for_the_grace_and_keep_their_units_if_they_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleetd.engine")

    async def t(c: Cluster) -> None:
        for machine_id in ("m1", "m2", "m3", "m4"):
            await c.add_machine(machine_id)
        for index in range(8):
            await submit(c.reg, f"u{index}.service")
        engine = Engine(c.kv, "m1", prefix=P, interval=0.05, ttl=TTL, grace=1.5)
        c.engines["m1"] = (engine, asyncio.create_task(engine.run()))
        await c.one_leader()

        async def all_placed() -> bool:
            return len(await placement(c.reg)) == 8

        await eventually(all_placed, seconds=5.0)
        before = await placement(c.reg)
        await asyncio.sleep(2.0)  # past the grace that followed winning leadership
        for machine_id in ("m2", "m3", "m4"):  # as when etcd lapses every lease at once
            await c.kv.revoke(c.machine_leases[machine_id])

        async def noticed() -> bool:
            return "3 of 4 machines vanished at once" in caplog.text

        await eventually(noticed, seconds=3.0)
        assert await placement(c.reg) == before  # held: nothing moved to m1
        await c.add_machine("m2")  # m2 re-registers within the grace; m3 and m4 stay away

        def on(machine_id: str, table: dict[str, list[str]]) -> set[str]:
            return {name for name, machines in table.items() if machines == [machine_id]}

        async def settled() -> bool:  # removals are written before placements: wait for both
            now = await placement(c.reg)
            return len(now) == 8 and not on("m3", now) and not on("m4", now)

        await eventually(settled, seconds=5.0)  # after the grace, m3's and m4's units are placed again
        after = await placement(c.reg)
        assert on("m2", before) <= on("m2", after)  # m2's units never left it
        assert len(after) == 8

    run(t)


def test_bad_data_is_logged_once_and_skipped_while_the_rest_is_scheduled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleetd.engine")

    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        for name in (
            "good.service",
            "badjson.service",
            "badtarget.service",
            "nobody.service",
            "badbody.service",
        ):
            await submit(c.reg, name)
        await c.kv.put("/t/units/badjson.service", "{nope")
        await c.kv.put("/t/targets/badtarget.service", "running")
        await c.kv.put("/t/units/nobody.service", '{"global":false,"hash":"' + "e" * 40 + '"}')
        bad_body = "[Service\nExecStart=/bin/true\n"
        await c.kv.put("/t/units/badbody.service", '{"global":false,"hash":"' + "f" * 40 + '"}')
        await c.kv.put("/t/bodies/" + "f" * 40, bad_body)
        await c.kv.put(
            "/t/schedule/m1/badtarget.service", '{"hash":"' + "d" * 40 + '","state":"launched"}'
        )  # left alone
        await c.kv.put("/t/schedule/m1/orphan.service", "not json")  # malformed: removed
        engine = c.start_engine("m1", interval=0.05)
        await c.one_leader()

        async def good_only() -> bool:
            return await placement(c.reg) == {"good.service": ["m1"], "badtarget.service": ["m1"]}

        await eventually(good_only)
        for _ in range(5):  # five more passes over the same bad data (each write wakes one)
            passes = engine.passes
            await c.kv.put("/t/targets/good.service", "launched")

            async def another_pass() -> bool:
                return engine.passes > passes  # noqa: B023 - awaited within this iteration

            await eventually(another_pass)
        for text in (
            "units/badjson.service: malformed JSON",
            "invalid target state 'running'",
            "nobody.service: its body /t/bodies/eeee",
            "badbody.service: bad unit file",
            "orphan.service",
        ):
            assert caplog.text.count(text) == 1, text

    run(t)


def test_a_deposed_leaders_writes_are_rejected_and_another_engine_takes_over() -> None:
    async def t(c: Cluster) -> None:
        for machine_id in ("m1", "m2"):
            await c.add_machine(machine_id)
            c.start_engine(machine_id)
        leader = await c.one_leader()
        stale = leader.election.leadership
        assert stale is not None
        await c.kv.revoke(leader.election._lease)  # its lease dies: the key goes with it

        async def other_leads() -> bool:
            return c.leaders() not in ([], [leader.machine_id])

        await eventually(other_leads, seconds=TTL * 3)
        plan = EnginePlan(
            0, (Schedule(UnitName("x.service"), MachineID("m1"), "a" * 40, TargetState.LAUNCHED, "r"),)
        )
        with pytest.raises(CASConflict):
            await c.reg.apply_plan(plan, stale)
        assert await c.reg.list_schedule() == {}

    run(t)


def test_unreferenced_bodies_are_collected_after_destroy() -> None:
    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        await submit(c.reg, "a.service")
        await submit(c.reg, "b.service", "[Unit]\nDescription=b\n")
        c.start_engine("m1")
        await c.one_leader()

        async def two_scheduled() -> bool:
            return len(await placement(c.reg)) == 2

        await eventually(two_scheduled)
        await c.reg.destroy_units(["b.service"])

        async def one_body() -> bool:
            return len((await c.kv.range("/t/bodies/")).kvs) == 1 and len(await placement(c.reg)) == 1

        await eventually(one_body)
        assert await c.reg.get_body(unit_file().hash) is not None

    run(t)


def test_a_lone_engine_whose_lease_expired_leads_again_on_a_new_lease() -> None:
    async def t(c: Cluster) -> None:
        engine = c.start_engine("m1")
        await c.one_leader()
        old_lease = engine.election._lease
        await c.kv.revoke(old_lease)  # as after an etcd outage longer than the TTL

        async def leads_on_a_new_lease() -> bool:
            held = await c.kv.get("/t/engine/leader")
            return engine.is_leader and held is not None and held.lease not in (0, old_lease)

        await eventually(leads_on_a_new_lease, seconds=TTL * 6)

    run(t)


def test_a_leader_key_written_without_a_lease_does_not_block_the_election(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleetd.engine")

    async def t(c: Cluster) -> None:
        await c.kv.put("/t/engine/leader", "\x00 not an engine")  # by hand: no lease behind it
        await c.add_machine("m1")
        await submit(c.reg, "a.service")
        c.start_engine("m1", interval=0.05)
        leader = await c.one_leader()
        assert leader.machine_id == "m1"
        assert "holds no lease" in caplog.text

        async def placed() -> bool:
            return await placement(c.reg) == {"a.service": ["m1"]}

        await eventually(placed)

    run(t)


def test_why_a_unit_cannot_be_placed_is_published_once_and_removed_when_it_is_placed() -> None:
    async def t(c: Cluster) -> None:
        await c.add_machine("m1", role="web")
        await submit(c.reg, "db.service", "[X-Fleet]\nMachineMetadata=role=db\n")
        engine = c.start_engine("m1", interval=0.01)
        await c.one_leader()
        reasons = Reasons(c.reg)

        async def published() -> bool:
            return "db.service" in await reasons.read(["db.service"])

        await eventually(published)
        entry = (await reasons.read())[UnitName("db.service")]
        assert entry.reason == "no machine has the metadata role=db"
        skipped, revision = engine.skipped, c.kv.revision
        await eventually(lambda: _true(engine.skipped >= skipped + 5))
        assert c.kv.revision == revision  # written once, not on every pass
        await c.add_machine("m2", role="db")

        async def placed_and_cleared() -> bool:
            return await placement(c.reg) == {"db.service": ["m2"]} and not await reasons.read()

        await eventually(placed_and_cleared)

    run(t)


def test_a_cordon_moves_units_away_and_a_bad_cordon_is_reported_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleetd.engine")

    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        await c.add_machine("m2")
        await submit(c.reg, "a.service", "[X-Fleet]\nMachineID=m1\n")
        await submit(c.reg, "b.service", "[X-Fleet]\nMachineID=m1\n")
        c.start_engine("m1", interval=0.05)
        await c.one_leader()

        async def both_on_m1() -> bool:
            return await placement(c.reg) == {"a.service": ["m1"], "b.service": ["m1"]}

        await eventually(both_on_m1)
        await submit(c.reg, "b.service")  # no longer pinned: movable
        await c.kv.put("/t/cordons/m2", "{bad")  # reported, ignored: m2 stays schedulable
        await c.kv.put("/t/cordons/bad id", '{"reason":""}')  # not a machine ID: reported, ignored
        await Cordons(c.reg).cordon("m1", "maintenance")

        async def drained() -> bool:
            return await placement(c.reg) == {"a.service": ["m1"], "b.service": ["m2"]}

        await eventually(drained)
        assert "ignoring cordon: bad record at /t/cordons/m2: malformed JSON" in caplog.text
        assert "ignoring cordon: bad record at /t/cordons/bad id: invalid machine id" in caplog.text
        assert await Cordons(c.reg).read() == {"m1": Cordon("maintenance")}
        assert await Cordons(c.reg).uncordon("m1")
        assert not await Cordons(c.reg).uncordon("m1")

    run(t)


@pytest.mark.parametrize("steady", [True, False], ids=["standby watched for a whole grace", "fresh standby"])
def test_a_new_leader_holds_absent_machines_only_when_its_view_of_etcd_is_not_steady(steady: bool) -> None:
    async def t(c: Cluster) -> None:
        for machine_id in ("m1", "m2"):
            await c.add_machine(machine_id)
        await submit(c.reg, "a.service", "[X-Fleet]\nConflicts=nothing\n")
        first = Engine(c.kv, "e1", prefix=P, interval=0.05, ttl=TTL, grace=3.0)
        c.engines["e1"] = (first, asyncio.create_task(first.run()))
        await c.one_leader()
        await eventually(lambda: _placed_anywhere(c))
        home = (await placement(c.reg))["a.service"][0]
        other = "m2" if home == "m1" else "m1"
        if steady:
            second = Engine(c.kv, "e2", prefix=P, interval=0.05, ttl=TTL, grace=3.0)
            c.engines["e2"] = (second, asyncio.create_task(second.run()))
            await asyncio.sleep(3.2)  # the standby talks to etcd for more than a grace
        await c.stop_engine("e1")  # the leader goes (its key is released at once)
        await c.kv.revoke(c.machine_leases[home])  # and the unit's machine is gone for good
        if not steady:
            second = Engine(c.kv, "e2", prefix=P, interval=0.05, ttl=TTL, grace=3.0)
            c.engines["e2"] = (second, asyncio.create_task(second.run()))
        await c.one_leader()

        async def moved() -> bool:
            return (await placement(c.reg)).get("a.service") == [other]

        if steady:
            await eventually(moved, seconds=2.0)  # no grace: a steady standby saw the machine die
        else:
            with pytest.raises(TimeoutError):
                await eventually(moved, seconds=2.0)  # held: it cannot tell a death from an outage
            await eventually(moved, seconds=3.0)

    run(t)


async def _placed_anywhere(c: Cluster) -> bool:
    return "a.service" in await placement(c.reg)


def test_a_unit_reported_failed_moves_with_reschedule_on_failure_and_its_count_is_recorded() -> None:
    async def t(c: Cluster) -> None:
        await c.add_machine("m1")
        await c.add_machine("m2")
        extra = "[X-Fleet]\nReschedule=on-failure\nRescheduleAttempts=1\nRescheduleBackoff=0\n"
        await submit(c.reg, "web.service", extra)
        await submit(c.reg, "plain.service")
        c.start_engine("m1", interval=0.01)
        await c.one_leader()
        await eventually(lambda: _has(placement(c.reg), {"web.service": ["m2"], "plain.service": ["m1"]}))
        web_hash, plain_hash = unit_file(extra).hash, unit_file().hash
        failed = UnitState(UnitName("web.service"), MachineID("m2"), "loaded", "failed", "failed", web_hash,
                           TargetState.LAUNCHED)
        plain = dataclasses.replace(failed, name=UnitName("plain.service"), machine_id=MachineID("m1"),
                                    hash=plain_hash)
        await c.reg.publish_states([failed, plain], c.machine_leases["m2"])
        await eventually(lambda: _has(placement(c.reg), {"web.service": ["m1"], "plain.service": ["m1"]}))
        record = (await Reschedules(c.reg).read())[UnitName("web.service")]
        assert (record.attempts, record.machines) == (1, ("m2",))
        assert record.reason == "failed on Machine(m2): moved to another machine (reschedule 1 of 1)"
        # failing on m1 too: its one attempt is used, so it stays there, saying so
        await c.reg.publish_states([dataclasses.replace(failed, machine_id=MachineID("m1"))],
                                   c.machine_leases["m1"])

        async def exhausted() -> bool:
            found = (await Reschedules(c.reg).read()).get(UnitName("web.service"))
            return found is not None and "left failed after 1 reschedule attempts" in found.reason

        await eventually(exhausted)
        assert await placement(c.reg) == {"web.service": ["m1"], "plain.service": ["m1"]}
        # an agent no longer running it deletes its failure marker with its state
        assert await c.kv.get(c.reg.keys.failed_unit("web.service", "m2")) is not None
        await c.reg.publish_states([], c.machine_leases["m2"], [("web.service", "m2")],
                                   [("web.service", "m2")])
        assert await c.kv.get(c.reg.keys.failed_unit("web.service", "m2")) is None

    run(t)


async def _has(found: Awaitable[dict[str, list[str]]], wanted: dict[str, list[str]]) -> bool:
    return await found == wanted


class CountingKV(MemoryKV):
    """MemoryKV counting Txns and watches opened."""

    def __init__(self) -> None:
        super().__init__()
        self.txns = 0
        self.watches = 0

    async def txn(self, compares, success, failure=()):  # type: ignore[no-untyped-def]
        self.txns += 1
        return await super().txn(compares, success, failure)

    def watch(self, prefix, start_revision, *, prev_kv=False):  # type: ignore[no-untyped-def]
        self.watches += 1
        return super().watch(prefix, start_revision, prev_kv=prev_kv)


def test_an_idle_standby_campaigns_once_and_holds_one_watch_over_many_ttls() -> None:
    """Standbys wait on their leader-key watch: no Txn and no new watch per TTL while the leader lives."""

    async def main() -> None:
        kv = CountingKV()
        leader = Engine(kv, "m1", prefix=P, interval=30.0, ttl=0.1, grace=0.1)
        standby = Engine(kv, "m2", prefix=P, interval=30.0, ttl=0.1, grace=0.1)
        tasks = [asyncio.create_task(leader.run())]
        try:
            await eventually(lambda: _true(leader.is_leader))
            tasks.append(asyncio.create_task(standby.run()))
            await eventually(lambda: _true(standby.election.leader == "m1"))
            txns, watches = kv.txns, kv.watches
            await asyncio.sleep(1.0)  # ten engine TTLs
            assert (kv.txns - txns, kv.watches - watches) == (0, 0)
            assert leader.is_leader and not standby.is_leader
        finally:
            await _stop(tasks, kv)

    asyncio.run(main())


async def _stop(tasks: list[asyncio.Task[None]], kv: MemoryKV) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await kv.close()


def test_standbys_hold_no_lease_before_and_after_a_new_leader() -> None:
    """A standby takes a lease only to create the leader key, and revokes it when another won (that the
    standbys do not all take one at once is shown on real etcd: tests/integration/test_no_herd.py)."""

    async def main() -> None:
        kv = CountingKV()
        elections = [Election(kv, "/leader", f"m{i:02}", 1.0) for i in range(20)]
        tasks = [asyncio.create_task(e.run()) for e in elections]
        try:
            await eventually(lambda: _true(sum(e.is_leader for e in elections) == 1))
            await eventually(lambda: _true(all(e.leader for e in elections)))
            first = next(e for e in elections if e.is_leader)
            assert [e.candidate for e in elections if e._lease] == [first.candidate], "a standby's lease"
            stopping = tasks[elections.index(first)]
            stopping.cancel()  # as a fleetd stops (Engine.run): campaigning ends, then it resigns
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            await first.resign()
            await eventually(lambda: _true(any(e.is_leader for e in elections if e is not first)))
            await asyncio.sleep(0.2)  # every standby's pause (at most ttl / 20 = 50 ms) is over
            assert sum(e.is_leader for e in elections) == 1
            assert sum(e._lease != 0 for e in elections) == 1, "a standby kept its lease"
        finally:
            await _stop(tasks, kv)

    asyncio.run(main())
