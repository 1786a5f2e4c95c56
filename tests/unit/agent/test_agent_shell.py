"""The agent shell on MemoryKV + FakeUnitManager with a manual clock: no systemd, no etcd, no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from fleetd.agent.agent import SETTLE, Agent
from fleetd.agent.plan import FencePolicy, TaskKind
from fleetd.errors import RegistryUnavailable
from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.kv import KV, Compare, Op, RangeResult, TxnResult, WatchEvent
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.retry import Backoff
from fleetd.systemd.fake import FakeUnitManager
from fleetd.unitfile.unit import UnitFile

PREFIX = "/fleet/"
KEYS = ks.Keyspace(PREFIX)
M1 = MachineID("m1")
WEB = UnitName("web.service")
DB = UnitName("db.service")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyKV:
    """A MemoryKV as seen through a network that can go down: every call raises RegistryUnavailable, and
    open watches hold their events until the network is back (as a resumed etcd watch delivers them)."""

    def __init__(self, inner: MemoryKV) -> None:
        self.inner = inner
        self.up = asyncio.Event()
        self.up.set()

    def _check(self) -> None:
        if not self.up.is_set():
            raise RegistryUnavailable("etcd cluster is unavailable or misconfigured (injected)")

    async def get(self, key: str) -> Any:
        self._check()
        return await self.inner.get(key)

    async def range(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> RangeResult:
        self._check()
        return await self.inner.range(prefix, revision=revision, limit=limit, start=start)

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        self._check()
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self._check()
        return await self.inner.delete(key, prefix=prefix)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._check()
        return await self.inner.txn(compares, success, failure)

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        self._check()
        return self._watch(self.inner.watch(prefix, start_revision, prev_kv=prev_kv))

    async def _watch(
        self, events: AsyncIterator[Sequence[WatchEvent]]
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        async for batch in events:
            await self.up.wait()
            yield batch

    async def grant(self, ttl: float) -> int:
        self._check()
        return await self.inner.grant(ttl)

    async def keep_alive(self, lease_id: int) -> float:
        self._check()
        return await self.inner.keep_alive(lease_id)

    async def revoke(self, lease_id: int) -> None:
        self._check()
        await self.inner.revoke(lease_id)

    async def time_to_live(self, lease_id: int) -> float:
        self._check()
        return await self.inner.time_to_live(lease_id)

    async def close(self) -> None:
        await self.inner.close()


def body(description: str, extra: str = "") -> UnitFile:
    return UnitFile.from_text(f"[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/true\n{extra}")


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class Cluster:
    """One agent (machine m1) and direct access to the shared store, as the engine and fleetctl have it."""

    def __init__(self, units: FakeUnitManager | None = None, metadata: dict[str, str] | None = None) -> None:
        self.clock = Clock()
        self.store = MemoryKV(clock=self.clock)
        self.kv = FlakyKV(self.store)
        self.units = units or FakeUnitManager()
        kv: KV = self.kv
        self.registry = Registry(kv, PREFIX)
        machine = MachineState(M1, "127.0.0.2", metadata or {"role": "web"})
        self.agent = Agent(self.registry, self.units, machine, ttl=30.0, sleep=no_sleep, clock=self.clock)
        self._mirror: asyncio.Task[None] | None = None
        self._written: dict[str, int] = {}  # mirrored prefix -> revision of the last write under it

    async def start(self) -> None:
        self._mirror = asyncio.create_task(self.agent.mirror.run())
        await self.agent.register()
        await self.agent.mirror.ready.wait()
        self.clock.now += SETTLE  # past the settle window of a fresh registration

    async def stop(self) -> None:
        if self._mirror is not None:  # before closing the store: the mirror would relist a closed store
            self._mirror.cancel()
            await asyncio.gather(self._mirror, return_exceptions=True)
        await self.store.close()

    async def schedule(self, name: str, unit: UnitFile, state: TargetState, machine: str = M1) -> None:
        await self.store.put(KEYS.body(unit.hash), unit.canonical)
        revision = await self.store.put(KEYS.scheduled(machine, name), ks.encode_schedule(unit.hash, state))
        self._written[KEYS.schedule(machine)] = revision

    async def unschedule(self, name: str, machine: str = M1) -> None:
        await self.store.delete(KEYS.scheduled(machine, name))
        self._written[KEYS.schedule(machine)] = self.store.revision

    async def put_global(self, name: str, unit: UnitFile, state: TargetState) -> None:
        await self.store.put(KEYS.body(unit.hash), unit.canonical)
        value = f'{{"hash":"{unit.hash}","state":"{state.value}"}}'
        self._written[KEYS.globals] = await self.store.put(KEYS.global_unit(name), value)

    async def synced(self) -> None:
        """Wait until the agent's mirror has seen every write to its prefixes."""
        for prefix in self.agent.mirror.prefixes:
            await asyncio.wait_for(self.agent.mirror.wait_for(self._written.get(prefix, 0), prefix), 5)

    async def pass_(self) -> tuple[TaskKind, ...]:
        await self.synced()
        done = await self.agent.reconcile()
        await self.agent.publish()
        return tuple(task.kind for task in done)

    async def state_record(self, name: str) -> Any:
        return await self.store.get(KEYS.unit_state(name, M1))


def run(scenario: Callable[[Cluster], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        cluster = Cluster(**kwargs)
        await cluster.start()
        try:
            await scenario(cluster)
        finally:
            await cluster.stop()

    asyncio.run(main())


def mutating_calls(units: FakeUnitManager) -> list[tuple[str, ...]]:
    return [call for call in units.calls if call[0] in ("load", "unload", "reload", "start", "stop")]


def test_register_puts_the_machine_on_a_lease() -> None:
    async def scenario(c: Cluster) -> None:
        record = await c.store.get(KEYS.machine(M1))
        assert record is not None and record.lease == c.agent.lease != 0
        machines = await c.registry.list_machines()
        assert [(m.id, m.public_ip, dict(m.metadata)) for m in machines] == [
            (M1, "127.0.0.2", {"role": "web"})
        ]
        revision = c.store.revision
        await c.agent.heartbeat()
        assert c.store.revision == revision, "a keep-alive is not a write"

    run(scenario)


def test_scheduled_unit_is_loaded_started_and_published_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(c: Cluster) -> None:
        unit = body("web")
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        with caplog.at_level(logging.INFO, logger="fleetd.agent.agent"):
            assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert mutating_calls(c.units) == [("load", WEB), ("reload",), ("start", WEB)]
        assert c.units.files()[WEB] == unit.canonical
        assert 'task=start unit=web.service reason="unit currently loaded but desired state is launched"' in (
            caplog.text
        )
        record = await c.state_record(WEB)
        assert record is not None and record.lease == c.agent.lease
        decoded = ks.decode_unit_state(record.key, record.value, WEB, M1)
        assert (decoded.active_state, decoded.sub_state, decoded.hash, decoded.state) == (
            "active",
            "running",
            unit.hash,
            TargetState.LAUNCHED,
        )
        revision = c.store.revision
        c.agent.publisher.mark([WEB])  # as a PropertiesChanged signal for an unchanged state would
        assert await c.agent.publish() == 0
        assert await c.pass_() == ()
        assert c.store.revision == revision, "nothing changed, nothing written"

    run(scenario)


def test_changed_hash_is_unload_load_start() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("v1"), TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        v2 = body("v2")
        await c.schedule(WEB, v2, TargetState.LAUNCHED)
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert mutating_calls(c.units) == [
            ("stop", WEB),
            ("unload", WEB),
            ("load", WEB),
            ("reload",),
            ("start", WEB),
        ]
        record = await c.state_record(WEB)
        assert record is not None and v2.hash in record.value

    run(scenario)


def test_unchanged_resync_publishes_nothing_with_one_batched_call() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        await c.schedule(DB, body("db"), TargetState.LOADED)
        await c.pass_()
        c.units.calls.clear()
        revision = c.store.revision
        assert await c.agent.resync() == 0
        assert c.store.revision == revision
        assert c.units.calls == [("states", DB, WEB)]
        c.units.crash(WEB)
        assert await c.agent.resync() == 1
        record = await c.state_record(WEB)
        assert record is not None and '"active":"failed"' in record.value

    run(scenario)


def test_stop_then_unschedule_unloads_and_removes_the_state() -> None:
    async def scenario(c: Cluster) -> None:
        unit = body("web")
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        await c.pass_()
        await c.schedule(WEB, unit, TargetState.LOADED)
        assert await c.pass_() == (TaskKind.STOP,)
        record = await c.state_record(WEB)
        assert (
            record is not None
            and '"state":"loaded"' in record.value
            and '"active":"inactive"' in record.value
        )
        await c.unschedule(WEB)
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.RELOAD)
        assert c.units.loaded_units() == {}
        assert await c.state_record(WEB) is None

    run(scenario)


def test_a_failed_task_holds_back_its_own_unit_and_the_next_pass_retries_it() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        c.units.fail_next("load", WEB)
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert mutating_calls(c.units) == [("load", DB), ("load", WEB), ("reload",), ("start", DB)]
        states = await c.units.states([DB, WEB])
        assert (states[DB].active_state, states[WEB].active_state) == ("active", "inactive")
        c.units.calls.clear()
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert mutating_calls(c.units) == [("load", WEB), ("reload",), ("start", WEB)]
        assert set(c.units.loaded_units()) == {DB, WEB}

    run(scenario)


def test_a_failed_stop_holds_back_the_starts_of_its_batch() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.pass_()
        await c.schedule(DB, body("db"), TargetState.LOADED)
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        c.units.fail_next("stop", DB)
        c.units.calls.clear()
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD)
        assert ("start", WEB) not in c.units.calls, "db.service may still run: nothing starts beside it yet"
        assert await c.pass_() == (TaskKind.STOP, TaskKind.START)
        states = await c.units.states([DB, WEB])
        assert (states[DB].active_state, states[WEB].active_state) == ("inactive", "active")

    run(scenario)


def test_one_failed_batch_is_one_step_of_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        c.units.fail_next("load", DB)
        c.units.fail_next("load", WEB)
        with caplog.at_level(logging.ERROR, logger="fleetd.agent.agent"):
            await c.pass_()
            c.units.fail_next("load", WEB)
            await c.pass_()
        waits = [record.getMessage().rsplit("(in ", 1)[1] for record in caplog.records]
        assert waits == ["1s)", "1s)", "2s)"]

    run(scenario)


def test_an_unload_that_fails_after_its_stop_holds_back_no_start() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.pass_()
        await c.unschedule(DB)
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        c.units.fail_next("unload", DB)  # the unit stopped, its unlink failed
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        states = await c.units.states([DB, WEB])
        assert (states[DB].active_state, states[WEB].active_state) == ("inactive", "active")
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.RELOAD)
        assert set(c.units.loaded_units()) == {WEB}

    run(scenario)


def test_a_reload_interrupted_by_a_failure_is_owed_to_the_next_pass() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        c.units.fail_next("reload")
        assert await c.pass_() == (TaskKind.LOAD,)
        c.units.calls.clear()
        assert await c.pass_() == (TaskKind.RELOAD, TaskKind.START)
        assert mutating_calls(c.units) == [("reload",), ("start", WEB)]

    run(scenario)


def test_global_units_follow_machine_metadata() -> None:
    async def scenario(c: Cluster) -> None:
        await c.put_global("mon.service", body("mon", "[X-Fleet]\nGlobal=true\n"), TargetState.LAUNCHED)
        await c.put_global(
            "dbmon.service",
            body("dbmon", "[X-Fleet]\nGlobal=true\nMachineMetadata=role=db\n"),
            TargetState.LAUNCHED,
        )
        await c.pass_()
        assert set(c.units.loaded_units()) == {"mon.service"}

    run(scenario)


def test_leftover_files_are_adopted_without_a_stop() -> None:
    unit = body("web")
    units = FakeUnitManager({WEB: unit.canonical})

    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        assert await c.pass_() == (TaskKind.LOAD, TaskKind.RELOAD, TaskKind.START)
        assert not [call for call in c.units.calls if call[0] in ("stop", "unload")]

    run(scenario, units=units)


def test_etcd_outage_keeps_units_and_recovery_unloads_what_moved(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.pass_()
        old_lease = c.agent.lease
        c.units.calls.clear()

        c.kv.up.clear()  # etcd unreachable from this machine
        with pytest.raises(RegistryUnavailable):
            await c.agent.heartbeat()
        assert await c.agent.reconcile() == ()
        c.clock.now += 31  # the lease expires; the engine re-places web.service on m2 meanwhile
        c.store.expire_leases()
        assert await c.store.get(KEYS.machine(M1)) is None
        await c.unschedule(WEB)
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED, machine="m2")
        assert await c.agent.reconcile() == (), "the mirror is stale while etcd is unreachable"
        assert mutating_calls(c.units) == [], "no stop, no unload while etcd is away"

        c.kv.up.set()
        with caplog.at_level(logging.INFO, logger="fleetd.agent.agent"):
            await c.agent.heartbeat()
            assert "lease expired" in caplog.text
            assert c.agent.lease not in (0, old_lease)
            record = await c.store.get(KEYS.machine(M1))
            assert record is not None and record.lease == c.agent.lease
            assert await c.pass_() == (), "units that left the schedule are held while it settles"
            assert "holding unload of web.service" in caplog.text
        c.clock.now += SETTLE
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.RELOAD)
        assert mutating_calls(c.units) == [("stop", WEB), ("unload", WEB), ("reload",)]
        assert await c.state_record(WEB) is None
        db_state = await c.state_record(DB)
        assert db_state is not None and db_state.lease == c.agent.lease, (
            "states re-published on the new lease"
        )

    run(scenario)


def test_a_pinned_unit_survives_an_outage_without_a_stop() -> None:
    """etcd lost the lease; the engine unscheduled the machine's units and schedules them back once the
    machine re-registers. The agent must not stop them in between (TestSingleNodeConnectivityLoss)."""

    async def scenario(c: Cluster) -> None:
        unit = body("web")
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        c.kv.up.clear()
        c.clock.now += 31
        c.store.expire_leases()
        await c.unschedule(WEB)  # the engine noticed the machine is gone
        c.kv.up.set()
        await c.agent.heartbeat()  # re-registers on a new lease
        assert await c.pass_() == ()
        await c.schedule(WEB, unit, TargetState.LAUNCHED)  # the engine places it back
        assert await c.pass_() == ()
        c.clock.now += SETTLE
        assert await c.pass_() == ()
        assert mutating_calls(c.units) == []
        record = await c.state_record(WEB)
        assert record is not None and record.lease == c.agent.lease

    run(scenario)


@pytest.mark.parametrize("past_deadline", [True, False], ids=["past its lease deadline", "before it"])
def test_an_unschedule_seen_before_the_heartbeat_notices_the_lost_lease_stops_nothing(
    past_deadline: bool,
) -> None:
    """The engine's deletion of the machine's schedule can reach the agent before its heartbeat notices
    the expired lease. Past its own lease deadline the agent holds the unload until a heartbeat registers
    it again; before it (etcd dropped the lease early), the pass reads the lease and registers first.
    Either way the schedule settles and nothing is stopped."""

    async def scenario(c: Cluster) -> None:
        unit = body("web")
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        old_lease = c.agent.lease
        if past_deadline:
            c.clock.now += 31
            c.store.expire_leases()
        else:
            await c.store.revoke(old_lease)
        await c.unschedule(WEB)  # the engine noticed the machine is gone; no heartbeat ran yet
        assert await c.pass_() == ()
        if past_deadline:
            await c.agent.heartbeat()
        assert c.agent.lease not in (0, old_lease), "registered again on a new lease"
        await c.schedule(WEB, unit, TargetState.LAUNCHED)  # the engine places it back
        c.clock.now += SETTLE
        assert await c.pass_() == ()
        assert mutating_calls(c.units) == []

    run(scenario)


def test_a_partitioned_agent_fences_its_conflicts_unit_and_unloads_it_once_it_is_back() -> None:
    """Cut off from etcd past its lease deadline, the agent stops its Conflicts unit (not the other one);
    back on a new lease it keeps it stopped while the schedule settles, then unloads it (re-placed)."""

    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web", "[X-Fleet]\nConflicts=web*\n"), TargetState.LAUNCHED)
        await c.schedule(DB, body("db"), TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        c.kv.up.clear()
        with pytest.raises(RegistryUnavailable):
            await c.agent.heartbeat()
        assert await c.agent.reconcile() == (), "not yet past the lease deadline"
        c.clock.now += 30
        assert [t.kind for t in await c.agent.reconcile()] == [TaskKind.STOP]
        assert mutating_calls(c.units) == [("stop", WEB)]
        c.store.expire_leases()
        await c.unschedule(WEB)  # the engine re-placed web.service on m2
        await c.schedule(WEB, body("web", "[X-Fleet]\nConflicts=web*\n"), TargetState.LAUNCHED, machine="m2")
        c.kv.up.set()
        await c.agent.heartbeat()  # "expired": registers on a new lease
        assert await c.pass_() == (), "held while the schedule settles"
        c.clock.now += SETTLE
        assert await c.pass_() == (TaskKind.UNLOAD, TaskKind.RELOAD)
        assert mutating_calls(c.units) == [("stop", WEB), ("stop", WEB), ("unload", WEB), ("reload",)]
        assert ("stop", DB) not in c.units.calls, "the unit without Conflicts kept running"

    run(scenario)


def test_a_fenced_unit_still_scheduled_here_starts_again_after_the_settle() -> None:
    async def scenario(c: Cluster) -> None:
        unit = body("web", "[X-Fleet]\nConflicts=web*\n")
        await c.schedule(WEB, unit, TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        c.kv.up.clear()
        c.clock.now += 31
        assert [t.kind for t in await c.agent.reconcile()] == [TaskKind.STOP]
        c.kv.up.set()
        await c.agent.heartbeat()  # "expired": registers on a new lease; the engine keeps it scheduled here
        assert await c.pass_() == (), "kept stopped while the schedule settles"
        c.clock.now += SETTLE
        assert await c.pass_() == (TaskKind.START,)
        assert mutating_calls(c.units) == [("stop", WEB), ("start", WEB)]

    run(scenario)


def test_fence_units_none_keeps_a_partitioned_agent_s_units_running() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web", "[X-Fleet]\nConflicts=web*\n"), TargetState.LAUNCHED)
        await c.pass_()
        c.units.calls.clear()
        c.agent._fence = FencePolicy.NONE
        c.kv.up.clear()
        c.clock.now += 31
        assert await c.agent.reconcile() == ()
        assert mutating_calls(c.units) == []

    run(scenario)


def test_heartbeats_every_quarter_ttl_and_retry_quickly_through_an_outage() -> None:
    """A pause shorter than the TTL must not cost the lease: no exponential backoff while etcd is away."""

    async def scenario(c: Cluster) -> None:
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            if len(delays) == 1:
                c.kv.up.clear()  # etcd goes away after the first heartbeat
            if len(delays) == 8:
                c.kv.up.set()  # and comes back after seven failed attempts
            if len(delays) == 9:
                raise asyncio.CancelledError
            await asyncio.sleep(0)

        c.agent._sleep = sleep
        lease = c.agent.lease
        with contextlib.suppress(asyncio.CancelledError):
            await c.agent._heartbeat_loop()
        assert delays == [30.0 / 4] + [0.5] * 7 + [30.0 / 4]
        assert c.agent.lease == lease, "the lease survived"

    run(scenario)


def test_sigterm_shutdown_unloads_everything_and_removes_the_machine() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        await c.schedule(DB, body("db"), TargetState.LOADED)
        await c.pass_()
        c.units.calls.clear()
        await c.agent.shutdown()
        assert mutating_calls(c.units) == [
            ("stop", DB),
            ("unload", DB),
            ("stop", WEB),
            ("unload", WEB),
            ("reload",),
        ]
        assert c.units.loaded_units() == {}
        assert (await c.store.range(KEYS.states)).kvs == ()
        assert await c.store.get(KEYS.machine(M1)) is None

    run(scenario)


def test_sigterm_shutdown_with_etcd_down_still_stops_units() -> None:
    async def scenario(c: Cluster) -> None:
        await c.schedule(WEB, body("web"), TargetState.LAUNCHED)
        await c.pass_()
        c.kv.up.clear()
        await c.agent.shutdown(registry_timeout=1.0)
        assert c.units.loaded_units() == {}

    run(scenario)


def test_duplicate_machine_id_is_refused_with_a_clear_message(caplog: pytest.LogCaptureFixture) -> None:
    class Stop(Exception):
        pass

    async def stop_sleeping(_: float) -> None:
        raise Stop

    async def scenario(c: Cluster) -> None:
        units = FakeUnitManager()
        twin = Agent(c.registry, units, MachineState(M1, "127.0.0.3"), ttl=30.0, sleep=stop_sleeping)
        with caplog.at_level(logging.ERROR, logger="fleetd.agent.agent"), pytest.raises(Stop):
            await twin.run()
        assert "machine ID m1 is already registered by another live fleetd" in caplog.text
        assert not twin.registered and units.calls == []
        record = await c.store.get(KEYS.machine(M1))
        assert record is not None and record.lease == c.agent.lease and "127.0.0.2" in record.value

    run(scenario)


def test_running_agent_reacts_to_the_schedule_and_to_systemd_changes() -> None:
    async def scenario(c: Cluster) -> None:
        agent = Agent(c.registry, c.units, MachineState(MachineID("m9")), ttl=30.0, sleep=no_sleep)
        task = asyncio.create_task(agent.run())
        try:
            await c.schedule(WEB, body("web"), TargetState.LAUNCHED, machine="m9")
            states = c.registry.watch_unit_states([WEB])
            assert isinstance(states, AsyncGenerator)
            async with asyncio.timeout(5):
                async for published in states:
                    if [(s.machine_id, s.active_state) for s in published] == [("m9", "active")]:
                        break
                c.units.crash(WEB)
                async for published in states:
                    if [(s.machine_id, s.active_state) for s in published] == [("m9", "failed")]:
                        break
            await states.aclose()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(scenario)


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_a_task_that_keeps_failing_is_retried_with_a_backoff_not_in_a_loop() -> None:
    # systemd refuses this file every time (its WantedBy names no unit): each pass's batch fails at its load
    broken = body("broken", "\n[Install]\nWantedBy=../etc.target\n")

    async def scenario(c: Cluster) -> None:
        agent = Agent(c.registry, c.units, MachineState(MachineID("m9")), ttl=30.0, settle=0.0)
        task = asyncio.create_task(agent.run())
        try:
            await c.schedule(DB, body("db"), TargetState.LAUNCHED, machine="m9")
            await c.schedule(WEB, broken, TargetState.LAUNCHED, machine="m9")
            async with asyncio.timeout(5):
                while not any(call == ("load", WEB) for call in c.units.calls):  # noqa: ASYNC110 - a fake's call log
                    await asyncio.sleep(0.01)
            await asyncio.sleep(1.5)  # a backoff of 1 s, then 2 s: one more try in this time, not thousands
            loads = sum(1 for call in c.units.calls if call == ("load", WEB))
            assert 1 <= loads <= 3, f"{loads} loads of a file systemd refuses in 1.5 s"
            assert ("start", DB) in c.units.calls, "a unit that fails holds back no other unit"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(scenario)
