"""The engine shell: elect a leader, and on the leader turn the mirrored keyspace into a schedule.

Only the leader holds a copy of the registry. A standby candidate watches the leader key and nothing else
(DESIGN.md §3: no herd): the mirror of units/, targets/, machines/, schedule/, bodies/, cordons/, failed/ and
reschedules/ (both small: failed units only) is listed when leadership is won and dropped, with every cache
built from it, when leadership is lost.

Level-triggered while leading: a change in any mirrored prefix, a leadership change or the periodic tick
(``interval``) wakes the loop; a pass builds a snapshot from the mirror, plans it with the pure planner and
applies the plan in Txns guarded by the leadership compare. A pass over the same mirror generation as the
last completed pass is skipped (the plan is a pure function of it). A failed compare is never patched: the
next pass re-plans from fresh data.

An etcd outage is not a machine failure (DESIGN.md §4). When every lease lapses together (etcd paused,
restarted or unreachable for longer than ``agent_ttl``), machine records vanish although the machines run
on. So for ``grace`` seconds (default: one agent TTL) after winning leadership (unless this candidate had
talked to etcd without a failure for a whole grace before winning: then the old leader died, not etcd),
and after seeing at least ``MASS_LOSS_FRACTION`` of the machines (and at least two) vanish between two
passes, machines that are
absent but still have units scheduled are *held*: their units stay scheduled to them and are not moved.
A machine that re-registers within the grace keeps its units untouched; one still absent afterwards is
declared lost and its units are placed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

from fleetd import heap, metrics
from fleetd.cancel import cancel_and_wait
from fleetd.engine.builder import BodyParser, Built, SnapshotBuilder, mirror_decoders
from fleetd.engine.election import Election
from fleetd.engine.plan import REASON_KINDS, Action, EnginePlan, Schedule, plan_cluster, reason_kind
from fleetd.errors import CASConflict, RegistryError
from fleetd.model import SHORT_ID_LENGTH, MachineID, UnitName
from fleetd.registry.keyspace import DEFAULT_PREFIX, Keyspace, Unplaceable
from fleetd.registry.kv import KV, Compare
from fleetd.registry.mirror import Changes, Mirror
from fleetd.registry.reasons import Reasons, Reschedules
from fleetd.registry.registry import Registry
from fleetd.unitfile.body import body_requirements

__all__ = ["Engine", "mirrored_prefixes", "parse_unit_body"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
DEFAULT_TTL = 10.0
LOG_SLICE = 500  # action lines logged between two yields to the event loop
MASS_LOSS_FRACTION = 0.5  # of the machines seen at the last pass, vanishing before the next one


# The default BodyParser: the one policy for unit text read back (``fleetd.unitfile.body``): a body that is
# not usable (not UTF-8, over 1 MiB, does not parse, bad [X-Fleet]) raises UnitFileError, and the builder
# leaves its units out of the snapshot.
parse_unit_body: BodyParser = body_requirements


def mirrored_prefixes(keys: Keyspace) -> list[str]:
    """The prefixes the leader mirrors (one watch each)."""
    return [
        keys.machines, keys.units, keys.targets, keys.schedules, keys.bodies, keys.cordons, keys.metadata,
        keys.failed, keys.reschedules,
    ]


class Engine:
    """One fleetd's engine: campaigns for leadership, and reconciles while it leads.

    ``ttl`` is the leader lease (a new leader takes over within one TTL of the old one dying); ``interval``
    is the periodic tick; ``clock`` (monotonic seconds) only times passes.
    """

    def __init__(
        self,
        kv: KV,
        machine_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        interval: float = DEFAULT_INTERVAL,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        parse_body: BodyParser = parse_unit_body,
        grace: float = DEFAULT_TTL,
        mass_loss: float = MASS_LOSS_FRACTION,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = Registry(kv, prefix)
        keys = self.registry.keys
        self.machine_id = machine_id
        self.interval = interval
        self.ttl = ttl
        self._clock = clock
        self.election = Election(kv, keys.leader, machine_id, ttl, clock=clock)
        self._kv = kv
        self._parse_body = parse_body
        self.mirror: Mirror | None = None  # the registry copy: only while leading
        self._builder = SnapshotBuilder(keys, parse_body)
        self._in_sync = False  # the builder holds the mirror as of the last take of its changes
        self.grace = grace
        self.mass_loss = mass_loss
        self._hold_until = 0.0  # monotonic time until which absent machines are held
        self._live: frozenset[MachineID] = frozenset()  # live machines at the last pass
        self._planned: tuple[int, bool] | None = None  # (mirror generation, holding) of the last pass
        self.passes = 0  # reconcile passes run as leader (for tests and benchmarks)
        self.skipped = 0  # wake-ups as leader with nothing new to plan
        self.reasons = Reasons(self.registry)
        self._published: dict[UnitName, Unplaceable] | None = None  # reasons in etcd (read once a term)
        self._wall_clock = wall_clock  # reschedule backoffs: recorded in etcd, so a new leader honours them
        self._retry_at: float | None = None  # a reschedule backoff ends: plan though nothing changed
        self.reschedules = Reschedules(self.registry)

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    async def run(self) -> None:
        """Campaign and reconcile until cancelled; on the way out, release leadership."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.election.run())
                group.create_task(self._loop())
        finally:
            await asyncio.shield(self.election.resign())

    async def _loop(self) -> None:
        while True:
            while not self.election.is_leader:
                self.election.changed.clear()
                await self.election.changed.wait()
            await self._lead()

    async def _lead(self) -> None:
        """One term: list the registry into a fresh mirror, reconcile until leadership is lost, drop it."""
        mirror = self.open_mirror()
        heap.pause()  # listing and the first build make a million objects: no collections meanwhile
        follow = asyncio.create_task(mirror.run())
        metrics.ENGINE_LEADER.set(1)
        try:
            await self._wait(mirror.ready)
            while self.election.is_leader:
                if mirror.ready.is_set():
                    await self._guarded_pass(mirror)
                await self._wait(mirror.changed)
        finally:
            metrics.ENGINE_LEADER.set(0)
            await cancel_and_wait(follow)
            self.mirror, self._planned, self._in_sync = None, None, False
            self._builder = SnapshotBuilder(self.registry.keys, self._parse_body)
            heap.release()

    def open_mirror(self) -> Mirror:
        """Start a term: a fresh registry copy (the caller runs ``mirror.run()``), caches and grace."""
        keys = self.registry.keys
        mirror = Mirror(self._kv, mirrored_prefixes(keys), decoders=mirror_decoders(keys), log_changes=True)
        self.mirror, self._planned, self._in_sync = mirror, None, False
        self._builder = SnapshotBuilder(keys, self._parse_body)
        # A candidate that watched a live etcd for a whole grace before winning saw machines leave as they
        # left: the old leader died, etcd did not. Otherwise (fleetd just started, or the election failed
        # lately: etcd was away) absent machines are held, so agents can re-register first.
        now = self._clock()
        steady = now - self.election.stable_since >= self.grace
        self._hold_until, self._live = (0.0 if steady else now + self.grace), frozenset()
        self._published = None
        return mirror

    async def _wait(self, event: asyncio.Event) -> None:
        """Until ``event`` is set, leadership changes or the tick elapses."""
        waiters = [
            asyncio.ensure_future(event.wait()),
            asyncio.ensure_future(self.election.changed.wait()),
        ]
        try:
            left = self._hold_until - self._clock()  # wake when a grace ends: held machines are lost then
            timeout = min(self.interval, left) if left > 0 else self.interval
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.mirror is not None:
            self.mirror.changed.clear()
        self.election.changed.clear()

    async def _guarded_pass(self, mirror: Mirror) -> None:
        retry = self._retry_at is not None and self._wall_clock() >= self._retry_at
        if self._planned == (mirror.generation, self._clock() < self._hold_until) and not retry:
            self.skipped += 1
            return
        started = self._clock()
        result = "ok"
        try:
            await self.reconcile()
        except RegistryError as exc:
            result = "error"
            logger.warning("engine pass failed: %s", exc)
        except Exception:  # a bug in one pass must not stop the engine: log it, retry on the next wake-up
            result = "error"
            logger.exception("engine pass failed")
        heap.settle()
        elapsed = self._clock() - started
        metrics.ENGINE_PASSES.labels(result).inc()
        metrics.ENGINE_PASS_SECONDS.observe(elapsed)
        if elapsed > self.interval:
            logger.warning("Engine completed reconciliation in %.3fs", elapsed)

    def build(self) -> Built:
        """A snapshot of the mirror as it is now (bad data reported once, at WARNING). Leader only."""
        built = self._copy_mirror().build()
        for problem in built.problems:
            logger.warning("%s", problem)
        return built

    def _copy_mirror(self) -> _Copy:
        """What changed in the mirror since the last pass (only the changed keys' entries: quick), for the
        builder to apply off the event loop; every entry on a term's first pass, after a relist, or after
        a pass whose build did not complete."""
        m, keys = self._leading_mirror(), self.registry.keys
        changes = m.take_changes(complete=not self._in_sync)
        self._in_sync = False  # until this build completes
        build = partial(
            self._update_builder, self._builder, m.revision, changes,
            bodies_revision=m.revision_of(keys.bodies),
        )
        return _Copy(build, min(m.revision_of(keys.units), m.revision_of(keys.schedules)))

    def _update_builder(
        self, builder: SnapshotBuilder, revision: int, changes: Changes, *, bodies_revision: int
    ) -> Built:
        built = builder.update(
            revision, changes.entries, bodies_revision=bodies_revision, complete=changes.complete
        )
        self._in_sync = builder is self._builder  # a builder of a term since ended leaves it out of sync
        return built

    async def _build_and_plan(self) -> tuple[Built, EnginePlan, dict[str, int]]:
        """Build the snapshot and plan it in a worker thread: at 100k units a pass takes long enough to
        starve the lease keep-alives and watches if it ran on the event loop (the thread gives the loop
        the interpreter every few milliseconds). The held machines are decided on the loop, in between.
        Also returns the unreferenced bodies, judged on the same build."""
        copy = self._copy_mirror()
        built = await asyncio.to_thread(copy.build)
        for problem in built.problems:
            logger.warning("%s", problem)
        held = self._held_machines(built)
        built = dataclasses.replace(
            built, snapshot=dataclasses.replace(built.snapshot, held_machines=held, now=self._wall_clock())
        )
        plan, garbage = await asyncio.to_thread(self._plan_and_collect, built, copy)
        return built, plan, garbage

    def _plan_and_collect(self, built: Built, copy: _Copy) -> tuple[EnginePlan, dict[str, int]]:
        """Off the event loop: the plan (it walks the whole snapshot), and the bodies nothing references."""
        return plan_cluster(built.snapshot), self._unreferenced_bodies(built, copy)

    async def reconcile(self) -> None:
        """One pass: snapshot, plan, apply, then collect unreferenced bodies. Leader only."""
        leadership = self.election.leadership
        if leadership is None or self.mirror is None or not self.mirror.ready.is_set():
            return
        self.passes += 1
        generation = self.mirror.generation
        built, plan, garbage = await self._build_and_plan()
        kinds = Counter(reason_kind(reason) for reason in plan.unplaceable.values())
        for kind in (*REASON_KINDS, "other"):
            metrics.ENGINE_UNPLACEABLE.labels(kind).set(kinds.get(kind, 0))
        if plan.rescheduled:  # counted before the move is written: a leader dying in between over-counts
            await self.reschedules.publish(plan.rescheduled, leadership)
            for name, record in sorted(plan.rescheduled.items()):
                if record is not None:
                    logger.info('action=reschedule unit=%s attempts=%d reason="%s"', name, record.attempts,
                                record.reason)
        self._retry_at = plan.retry_at
        if plan.actions:
            if not await self._apply(plan, leadership):
                return  # not applied: the next wake-up plans again
        else:
            logger.debug("engine pass at revision %d: nothing to do", plan.revision)
        await self._publish_reasons(plan, built, leadership)
        if garbage:
            # A repeat before the mirror sees the deletes writes nothing: the compares on mod revision fail.
            deleted = await self.registry.collect_bodies(garbage, leadership)
            if deleted:
                logger.info('action=collect bodies=%d reason="no unit references them"', deleted)
        # completed: until the mirror changes or the grace ends, a pass would plan the same
        self._planned = (generation, self._clock() < self._hold_until)

    def _held_machines(self, built: Built) -> frozenset[MachineID]:
        """Absent machines with scheduled units, while a grace runs (see the module docstring)."""
        now, live = self._clock(), frozenset(built.snapshot.machines)
        gone = self._live - live
        if self._live and len(gone) >= max(2, self.mass_loss * len(self._live)):
            logger.warning(
                "%d of %d machines vanished at once: holding their units for %.1fs (etcd trouble, not %s)",
                len(gone), len(self._live), self.grace, "machine failures",
            )
            self._hold_until = max(self._hold_until, now + self.grace)
        self._live = live
        if now >= self._hold_until:
            return frozenset()
        return frozenset(e.machine_id for e in built.snapshot.schedule.values()) - live

    async def _publish_reasons(self, plan: EnginePlan, built: Built, leadership: Compare) -> None:
        """Write why units cannot be placed: only entries that changed since the last pass."""
        if self._published is None:
            self._published = await self.reasons.read()
        units = built.snapshot.units
        wanted = {name: Unplaceable(units[name].hash, reason) for name, reason in plan.unplaceable.items()}
        changes: dict[UnitName, Unplaceable | None] = {
            name: entry for name, entry in wanted.items() if self._published.get(name) != entry
        }
        changes.update((name, None) for name in self._published if name not in wanted)
        if changes:
            await self.reasons.publish(changes, leadership)
            self._published = wanted
            for name, entry in sorted(changes.items()):
                if entry is not None:
                    logger.info('action=unplaceable unit=%s reason="%s"', name, entry.reason)

    def _leading_mirror(self) -> Mirror:
        if self.mirror is None:
            raise RuntimeError("the engine holds no registry copy: it is not leading")
        return self.mirror

    async def _apply(self, plan: EnginePlan, leadership: Compare) -> bool:
        try:
            revision = await self.registry.apply_plan(plan, leadership)
        except CASConflict as exc:
            logger.warning("engine plan of %d actions not applied: %s", len(plan.actions), exc)
            return False
        for index, action in enumerate(plan.actions, 1):
            logger.info("%s", _describe(action))
            kind = "schedule" if isinstance(action, Schedule) else "unschedule"
            metrics.ENGINE_PLACEMENTS.labels(kind).inc()
            if index % LOG_SLICE == 0:
                await asyncio.sleep(0)  # a first pass logs 100,000 placements: let keep-alives through
        await self._caught_up(revision, self.registry.keys.schedules)
        return True

    def _unreferenced_bodies(self, built: Built, copy: _Copy) -> dict[str, int]:
        """Bodies (hash -> mod revision) that nothing in ``built`` references.

        A body newer than what the units/ or schedule/ watch had delivered may belong to a unit that was not
        mirrored yet (they are written in one Txn but arrive on different watches): it is kept.
        """
        horizon = copy.horizon
        return {h: revision for h, revision in (built.unreferenced or {}).items() if revision <= horizon}

    async def _caught_up(self, revision: int, prefix: str) -> None:
        """Let the mirror see our own writes before the next pass plans (else it would redo them); the
        wait is the watch's lag (a metric)."""
        started = self._clock()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ttl):
                await self._leading_mirror().wait_for(revision, prefix)
                metrics.ENGINE_WATCH_LAG.observe(self._clock() - started)


@dataclasses.dataclass(frozen=True, slots=True)
class _Copy:
    """The mirror as one pass sees it: a build of the snapshot from the changes taken, and the revision up
    to which both units/ and schedule/ had been delivered (bodies newer than that may be a new unit's)."""

    build: Callable[[], Built]
    horizon: int


def _describe(action: Action) -> str:
    machine = action.machine_id[:SHORT_ID_LENGTH]
    if isinstance(action, Schedule):
        return (
            f"action=schedule unit={action.unit} machine={machine} state={action.state.value}"
            f' reason="{action.reason}"'
        )
    return f'action=unschedule unit={action.unit} machine={machine} reason="{action.reason}"'
