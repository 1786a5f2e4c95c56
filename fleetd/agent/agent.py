"""The agent shell: register this machine, follow its schedule, drive systemd to match, publish unit states.

Read -> decide -> write. The schedule (``schedule/<id>/``) and the global units (``globals/``) are followed by
a watch-fed Mirror; bodies are read by hash once and cached. While a Global unit it may run has
``MachineMetadata``, this machine's live metadata is read every 10 s (``fleetd.agent.own_metadata``: one Get,
not a watch), so Global units follow it; otherwise an idle agent reads nothing. Each pass plans with the
pure ``fleetd.agent.plan`` and runs the tasks in order. A failed task holds back the rest of its own unit's
tasks, not other units' (a failed stop also holds back this batch's starts: what should have stopped may
still run; an unload that failed after its stop does not; a failed daemon-reload holds back everything
after it). The next pass comes with the next change or after a backoff (1 s doubling to 60 s, reset by a
batch with no failure), so a failure that persists is not retried in a tight loop and does not keep the
machine's other units from running.

Liveness is one lease of ``ttl`` seconds, kept alive (keep-alives are not writes). Losing etcd stops no
unit except by fencing: passes that cannot read are postponed with a backoff, and when etcd is back an
expired lease is replaced (re-register, re-publish) and a later pass unloads whatever was re-placed
elsewhere meanwhile. Every decision (holding unloads, the owed reload, fencing the units the fence policy
covers once the lease is known lost) is the pure planner's; this shell tells it what it knows about its
lease and last batch (``Facts``), confirms the lease when the plan asks, and runs the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fleetd import metrics
from fleetd.agent.own_metadata import METADATA_INTERVAL, OwnMetadata
from fleetd.agent.plan import (
    AgentPlan,
    CurrentUnit,
    DesiredUnit,
    Facts,
    FencePolicy,
    Task,
    TaskKind,
    desired_units,
    plan_pass,
)
from fleetd.agent.publisher import StatePublisher
from fleetd.agent.source import DesiredSource
from fleetd.errors import RegistryError, SystemdError
from fleetd.model import MachineState, TargetState, UnitName, UnitState
from fleetd.registry.registry import DuplicateMachine, Registry
from fleetd.retry import Backoff, Sleep, attempts
from fleetd.systemd.protocol import UnitManager

__all__ = ["Agent", "Backoff", "Handover"]

logger = logging.getLogger(__name__)

RESYNC_INTERVAL = 10.0  # seconds between batched systemd state resyncs
RECONCILE_INTERVAL = 30.0  # a pass without any wake-up (free: no etcd reads, no D-Bus calls when idle)
MAX_BACKOFF = 60.0
OUTAGE_RETRY = 0.5  # seconds between keep-alive attempts while etcd is unreachable (at most ttl/10)
# After registering on a new lease, wait this long before unloading units that are not in the schedule: the
# engine unschedules a machine's units when its record vanishes and schedules them back within a pass of the
# record's return, so a unit pinned here would otherwise be stopped and started again after an etcd outage.
SETTLE = 5.0


@dataclass(frozen=True, slots=True)
class Handover:
    """What a reloaded agent takes over from the previous one: its lease and what it applied."""

    lease: int
    applied: Mapping[UnitName, CurrentUnit] = field(default_factory=dict)
    published: Mapping[UnitName, UnitState] = field(default_factory=dict)


class Agent:
    def __init__(
        self,
        registry: Registry,
        units: UnitManager,
        machine: MachineState,
        *,
        ttl: float,
        resync_interval: float = RESYNC_INTERVAL,
        reconcile_interval: float = RECONCILE_INTERVAL,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        settle: float = SETTLE,
        fence: FencePolicy = FencePolicy.CONFLICTS,
        handover: Handover | None = None,
        metadata_interval: float = METADATA_INTERVAL,
    ) -> None:
        self._registry = registry
        self._kv = registry.kv
        self._units = units
        self.machine = machine
        self.ttl = ttl
        self._resync_interval = resync_interval
        self._reconcile_interval = reconcile_interval
        self._sleep = sleep
        self._clock = clock
        self._settle = settle
        self._fence = fence
        # What the planner is told each pass (Facts): see fleetd.agent.plan.
        self._settle_until = 0.0  # a new registration's schedule settles until then
        self._lease_deadline = math.inf  # when the lease surely lapses unless a keep-alive succeeds
        self._lease_expired = False  # a keep-alive was answered "expired" and no new lease is held yet
        self._reachable = True  # the last keep-alive reached etcd
        self._fenced: frozenset[UnitName] = frozenset()
        self.source = DesiredSource(registry, machine.id)
        self.mirror = self.source.mirror
        self.own_metadata = OwnMetadata(
            registry.kv, registry.keys.machine_metadata(machine.id), machine.id, interval=metadata_interval
        )
        self.publisher = StatePublisher(registry, units, machine.id)
        self.lease = 0
        self.registered = False
        self.applied: dict[UnitName, CurrentUnit] = {}
        self._wake = asyncio.Event()
        self._publish = asyncio.Event()
        self._schema_checked = False
        self._wake_at = math.inf  # the planner wants a pass at this time
        self._reload_owed = False  # a batch loaded or unloaded units but stopped before its reload
        self._retry = Backoff(1.0, MAX_BACKOFF)  # between passes whose batch failed (a failure may persist)
        if handover is not None:
            self.lease = handover.lease
            self.applied = dict(handover.applied)
            self.publisher.lease = handover.lease
            self.publisher.published.update(handover.published)

    # -- steps (each does one thing; ``run`` schedules them) ---------------------------------------------

    async def register(self) -> None:
        """Put this machine's record on a lease (the handed-over one, else a new one).

        Raises DuplicateMachine when another live fleetd holds this machine ID, RegistryError otherwise.
        """
        if not self._schema_checked:
            await self._registry.ensure_schema()
            self._schema_checked = True
        sent = self._clock()
        fresh = self.lease == 0 or await self._kv.time_to_live(self.lease) <= 0
        lease = await self._kv.grant(self.ttl) if fresh else self.lease
        try:
            await self._registry.register_machine(self.machine, lease)
        except BaseException:
            if fresh:
                with contextlib.suppress(RegistryError):
                    await self._kv.revoke(lease)
            raise
        self.lease = lease
        self.registered = True
        self._lease_expired = False
        self._lease_deadline = sent + self.ttl
        if fresh:
            self._settle_until = self._clock() + self._settle
            self.publisher.new_lease(lease, self.applied)
            self._publish.set()
        self._wake.set()
        logger.info(
            "registered machine=%s public_ip=%s metadata=%s lease=%x ttl=%gs",
            self.machine.id,
            self.machine.public_ip or "-",
            ",".join(f"{k}={v}" for k, v in sorted(self.machine.metadata.items())) or "-",
            lease,
            self.ttl,
        )

    async def heartbeat(self) -> None:
        """Keep the lease alive; when it has expired (etcd lost us), register again on a new lease.

        The lease is surely alive until ``ttl`` after a keep-alive that succeeded was sent; the planner
        fences when that deadline passes (or etcd says "expired") before a new registration succeeds.
        """
        sent = self._clock()
        try:
            remaining = await self._kv.keep_alive(self.lease)
        except RegistryError:
            self._reachable = False
            raise
        self._reachable = True
        if remaining > 0:
            self._lease_deadline = sent + min(remaining, self.ttl)
            return
        logger.warning("machine lease expired (etcd lost this machine): registering again")
        self.registered = False
        self._lease_expired = True
        self.lease = 0
        self._wake.set()  # the planner fences while no new lease is held
        await self.register()

    async def reconcile(self) -> tuple[Task, ...]:
        """One pass: desired (mirror + bodies) vs current (units directory) -> a plan, its tasks run in order.

        Raises RegistryError when bodies cannot be read: no task runs then (units keep running).
        Returns the tasks that ran successfully.
        """
        if (self.lease == 0 and not self._lease_expired) or not self.source.ready:
            return ()  # not registered yet (a lost lease still plans: fencing)
        wanted = await self.source.read()
        own = self.own_metadata
        own.needed = any(unit.requirements.metadata for unit in wanted.global_units.values())
        if own.needed and not own.ready:
            await own.refresh()  # Global units follow live metadata from the pass that first needs it
        machine = self.own_metadata.machine(self.machine)
        desired = desired_units(machine, wanted.scheduled, wanted.global_units)
        current = self._current()
        plan = plan_pass(desired, current, self._facts(wanted.skipped))
        if plan.confirm_lease:
            # Units left the schedule: the engine also unschedules a machine whose lease expired, and that
            # deletion can arrive before a keep-alive notices. Confirm the lease first (one read, only on
            # passes that would unload); register again when it is gone, so the planner holds the unloads.
            if await self._kv.time_to_live(self.lease) <= 0:
                logger.warning("machine lease expired (etcd lost this machine): registering before unloading")
                self.lease = 0
                await self.register()
            plan = plan_pass(desired, current, self._facts(wanted.skipped, lease_confirmed=True))
        self._take(plan)
        if not plan.tasks:
            logger.debug("reconcile: nothing to do (%d units)", len(current))
            return ()
        done = await self._run_tasks(plan.tasks, desired)
        self.source.keep_only(unit.hash for unit in desired.values())
        return done

    def _facts(self, skipped: frozenset[UnitName], *, lease_confirmed: bool = False) -> Facts:
        return Facts(
            now=self._clock(),
            lease_deadline=self._lease_deadline,
            lease_expired=self._lease_expired,
            reachable=self._reachable,
            lease_confirmed=lease_confirmed,
            settle_until=self._settle_until,
            reload_owed=self._reload_owed,
            fenced=self._fenced,
            fence=self._fence,
            skipped=skipped,
        )

    def _take(self, plan: AgentPlan) -> None:
        """Keep what the plan carries to the next pass, and log its holds and fences."""
        if plan.held:
            logger.info("holding unload of %s until the schedule settles", ", ".join(sorted(plan.held)))
        if plan.fenced != self._fenced:
            if plan.fenced - self._fenced:
                logger.warning("fencing %s: lease lost", ", ".join(sorted(plan.fenced - self._fenced)))
            if self._fenced - plan.fenced:
                logger.info("fence released for %s", ", ".join(sorted(self._fenced - plan.fenced)))
        self._fenced = plan.fenced
        self._wake_at = min(self._wake_at, plan.wake_at)

    async def publish(self) -> int:
        """Publish changed states of the dirty units; returns how many records were written or removed."""
        return await self.publisher.flush(self.applied)

    async def resync(self) -> int:
        """The periodic batched resync: every unit's state is read (one call) and published if changed."""
        self.publisher.mark_all(self.applied)
        return await self.publish()

    def handover(self) -> Handover:
        return Handover(self.lease, dict(self.applied), dict(self.publisher.published))

    async def shutdown(self, registry_timeout: float = 5.0) -> None:
        """SIGTERM: stop and unload every fleet unit here, then remove this machine's states and record."""
        loaded = sorted(self._units.loaded_units())
        unloaded = 0
        for name in loaded:
            try:
                await self._units.stop(name)
                logger.info('task=stop unit=%s reason="fleetd shutting down"', name)
                await self._units.unload(name)
                logger.info('task=unload unit=%s reason="fleetd shutting down"', name)
                unloaded += 1
            except SystemdError as exc:
                logger.error("shutdown: unit=%s could not be stopped and unloaded: %s", name, exc)
            self.applied.pop(name, None)
        if unloaded:
            try:
                await self._units.reload()
            except SystemdError as exc:
                logger.error("shutdown: systemd reload failed: %s", exc)
        if not self.lease:
            return
        try:
            async with asyncio.timeout(registry_timeout):
                await self.publisher.remove_all()
                await self._registry.remove_machine(self.machine.id)
                await self._kv.revoke(self.lease)
        except (RegistryError, TimeoutError) as exc:
            logger.warning("shutdown: could not remove machine %s from etcd: %s", self.machine.id, exc)
        else:
            logger.info("machine %s removed from the cluster", self.machine.id)
        self.lease = 0
        self.registered = False

    # -- the running agent ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Register (retrying), then run the loops until cancelled."""
        await self._register_until_done()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.mirror.run())
            group.create_task(self._heartbeat_loop())
            group.create_task(self._mirror_wakeups())
            group.create_task(self.own_metadata.run(self._wake.set, self._sleep))
            group.create_task(self._reconcile_loop())
            group.create_task(self._changes_loop())
            group.create_task(self._publish_loop())

    async def _register_until_done(self) -> None:
        # Safe to repeat: a failed register revokes the lease it granted, and the record's Txn is guarded.
        retrying = attempts(
            lambda error: isinstance(error, RegistryError), initial=1.0, maximum=MAX_BACKOFF,
            sleep=self._sleep, what=f"register machine {self.machine.id}",
        )
        async for attempt in retrying:
            with attempt:
                try:
                    await self.register()
                except DuplicateMachine:
                    logger.error(
                        "machine ID %s is already registered by another live fleetd (two machines share"
                        " this /etc/machine-id, or an earlier fleetd's lease has not expired yet); refusing"
                        " to run units until it is gone",
                        self.machine.id,
                    )
                    raise

    async def _heartbeat_loop(self) -> None:
        # A keep-alive every ttl/4 leaves 3/4 of the TTL to ride out an outage. While etcd is unreachable,
        # retry often (keep-alives are cheap and are not writes): the lease must be refreshed the moment etcd
        # answers again, or a pause shorter than the TTL would still cost this machine its units.
        interval = self.ttl / 4
        retry = min(OUTAGE_RETRY, self.ttl / 10)
        backoff = Backoff(min(1.0, interval), interval)
        outage = False
        due = self._clock()
        while True:
            metrics.LEASE_KEEPALIVE_LAG.set(max(0.0, self._clock() - due))
            try:
                await self.heartbeat()
            except DuplicateMachine:
                logger.error("machine ID %s was taken by another fleetd; retrying", self.machine.id)
                await self._sleep(backoff.next())
                continue
            except RegistryError as exc:
                if not outage:
                    logger.warning(
                        "etcd unreachable (%s): units keep running; retrying every %.2gs", exc, retry
                    )
                    self._wake.set()  # the planner says when to fence, should the lease lapse
                outage = True
                await self._sleep(retry)
                continue
            if outage:
                logger.info("etcd reachable again: reconciling")
                outage = False
                self._wake.set()
                self._publish.set()
            backoff.reset()
            due = self._clock() + interval
            await self._sleep(interval)

    async def _mirror_wakeups(self) -> None:
        while True:
            await self.mirror.changed.wait()
            self.mirror.changed.clear()
            self._wake.set()

    async def _reconcile_loop(self) -> None:
        backoff = Backoff(1.0, MAX_BACKOFF)
        while True:
            timeout = max(0.0, min(self._reconcile_interval, self._wake_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self._wake_at = math.inf
            try:
                await self.reconcile()
            except RegistryError as exc:
                delay = backoff.next()
                logger.warning("reconcile postponed, etcd unreachable (%s); retrying in %.0fs", exc, delay)
                await self._sleep(delay)
                self._wake.set()
                continue
            backoff.reset()
            self._publish.set()

    async def _changes_loop(self) -> None:
        async for name in self._units.changes():
            self.publisher.mark([name])
            self._publish.set()

    async def _publish_loop(self) -> None:
        backoff = Backoff(1.0, MAX_BACKOFF)
        while True:
            try:
                async with asyncio.timeout(self._resync_interval):
                    await self._publish.wait()
            except TimeoutError:
                self.publisher.mark_all(self.applied)
            self._publish.clear()
            if not self.registered:
                continue
            try:
                await self.publish()
            except (RegistryError, SystemdError) as exc:
                delay = backoff.next()
                logger.warning("publishing unit states failed (%s); retrying in %.0fs", exc, delay)
                await self._sleep(delay)
                self._publish.set()
                continue
            backoff.reset()

    # -- internals -----------------------------------------------------------------------------------------

    def _current(self) -> dict[UnitName, CurrentUnit]:
        current: dict[UnitName, CurrentUnit] = {}
        for name, unit_hash in self._units.loaded_units().items():
            known = self.applied.get(name)
            if known is not None and known.hash == unit_hash:
                current[name] = known
            else:
                current[name] = CurrentUnit(name, unit_hash, TargetState.INACTIVE)
        return current

    async def _run_tasks(
        self, tasks: tuple[Task, ...], desired: Mapping[UnitName, DesiredUnit]
    ) -> tuple[Task, ...]:
        done: list[Task] = []
        failed: set[UnitName] = set()  # units with a failed task: their other tasks wait for the next pass
        stop_failed = False  # what should have stopped may still run: no start follows it in this batch
        stopped: set[UnitName] = set()  # units an unload stopped (before its unlink, which may fail)
        delay: float | None = None  # until the next pass, once a task failed
        for task in tasks:
            if task.unit in failed or (stop_failed and task.kind is TaskKind.START):
                continue
            try:
                await self._run_task(task, desired, stopped)
            except SystemdError as exc:
                metrics.AGENT_TASKS.labels(task.kind.name.lower(), "error").inc()
                if delay is None:  # one step of the backoff per failed batch, however many tasks failed
                    delay = self._retry.next()
                    self._wake_at = min(self._wake_at, self._clock() + delay)
                logger.error(
                    "task=%s unit=%s failed: %s; %s waits for the next pass (in %.0fs)",
                    task.kind.name.lower(),
                    task.unit or "-",
                    exc,
                    "the rest of this batch" if task.unit is None else "this unit",
                    delay,
                )
                if task.unit is None:  # a failed daemon-reload: every later task needs it
                    break
                failed.add(task.unit)
                if task.kind is TaskKind.STOP or (task.kind is TaskKind.UNLOAD and task.unit not in stopped):
                    stop_failed = True
                continue
            done.append(task)
            metrics.AGENT_TASKS.labels(task.kind.name.lower(), "ok").inc()
            if task.unit is None:
                logger.info('task=%s reason="%s"', task.kind.name.lower(), task.reason)
            else:
                logger.info('task=%s unit=%s reason="%s"', task.kind.name.lower(), task.unit, task.reason)
        if delay is None:  # no task failed
            self._retry.reset()
        self.publisher.mark(task.unit for task in done if task.unit is not None)
        for state in (TargetState.LOADED, TargetState.LAUNCHED):
            count = sum(1 for unit in self.applied.values() if unit.state is state)
            metrics.AGENT_UNITS.labels(state.value).set(count)
        return tuple(done)

    async def _run_task(
        self, task: Task, desired: Mapping[UnitName, DesiredUnit], stopped: set[UnitName]
    ) -> None:
        name = task.unit
        if task.kind is TaskKind.RELOAD or name is None:
            await self._units.reload()
            self._reload_owed = False
            return
        if task.kind in (TaskKind.LOAD, TaskKind.UNLOAD):
            self._reload_owed = True
        if task.kind is TaskKind.UNLOAD:
            await self._units.stop(name)  # a failed stop keeps the file, so the unload is retried
            stopped.add(name)
            self.applied.pop(name, None)
            await self._units.unload(name)
        elif task.kind is TaskKind.LOAD:
            unit = desired[name]
            await self._units.load(name, self.source.text(unit.hash))
            self.applied[name] = CurrentUnit(name, unit.hash, TargetState.LOADED, unit.conflicts)
        elif task.kind is TaskKind.START:
            await self._units.start(name)
            self.applied[name] = dataclasses.replace(self.applied[name], state=TargetState.LAUNCHED)
        elif task.kind is TaskKind.STOP:  # also a fenced unit that left the schedule: not in ``desired``
            await self._units.stop(name)
            self.applied[name] = dataclasses.replace(self.applied[name], state=TargetState.LOADED)
