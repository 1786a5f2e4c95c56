"""The engine shell: elect a leader, and on the leader turn the mirrored keyspace into a schedule.

Level-triggered: a change in any mirrored prefix (units/, targets/, machines/, schedule/, bodies/), a
leadership change or the periodic tick (``interval``) wakes the loop; each pass builds a snapshot from the
mirror, plans it with the pure planner and applies the plan in Txns guarded by the leadership compare. A
failed compare is never patched: the next pass re-plans from fresh data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fleetd.engine.builder import BodyParser, Built, SnapshotBuilder
from fleetd.engine.election import Election
from fleetd.engine.plan import Action, EnginePlan, Schedule, plan_cluster
from fleetd.errors import CASConflict, RegistryError
from fleetd.model import SHORT_ID_LENGTH
from fleetd.registry.keyspace import DEFAULT_PREFIX, BadRecord
from fleetd.registry.kv import KV, Compare
from fleetd.registry.mirror import Mirror
from fleetd.registry.registry import Registry
from fleetd.unitfile.body import body_requirements

__all__ = ["Engine", "parse_unit_body"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
DEFAULT_TTL = 10.0


# The default BodyParser: the one policy for unit text read back (``fleetd.unitfile.body``): a body that is
# not usable (not UTF-8, over 1 MiB, does not parse, bad [X-Fleet]) raises UnitFileError, and the builder
# leaves its units out of the snapshot.
parse_unit_body: BodyParser = body_requirements


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
    ) -> None:
        self.registry = Registry(kv, prefix)
        keys = self.registry.keys
        self.machine_id = machine_id
        self.interval = interval
        self.ttl = ttl
        self._clock = clock
        self.election = Election(kv, keys.leader, machine_id, ttl)
        self.mirror = Mirror(kv, [keys.machines, keys.units, keys.targets, keys.schedules, keys.bodies])
        self._builder = SnapshotBuilder(keys, parse_body)
        self.passes = 0  # reconcile passes run as leader (for tests and benchmarks)

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    async def run(self) -> None:
        """Campaign and reconcile until cancelled; on the way out, release leadership."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.mirror.run())
                group.create_task(self.election.run())
                group.create_task(self._loop())
        finally:
            await asyncio.shield(self.election.resign())

    async def _loop(self) -> None:
        await self.mirror.ready.wait()
        while True:
            if self.election.is_leader:
                await self._guarded_pass()
            await self._wait()

    async def _wait(self) -> None:
        """Until the mirror changes, leadership changes or the tick elapses."""
        waiters = [
            asyncio.ensure_future(self.mirror.changed.wait()),
            asyncio.ensure_future(self.election.changed.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.mirror.changed.clear()
        self.election.changed.clear()

    async def _guarded_pass(self) -> None:
        started = self._clock()
        try:
            await self.reconcile()
        except RegistryError as exc:
            logger.warning("engine pass failed: %s", exc)
        except Exception:  # a bug in one pass must not stop the engine: log it, retry on the next wake-up
            logger.exception("engine pass failed")
        elapsed = self._clock() - started
        if elapsed > self.interval:
            logger.warning("Engine completed reconciliation in %.3fs", elapsed)

    def build(self) -> Built:
        """A snapshot of the mirror as it is now (bad data reported once, at WARNING)."""
        m, keys = self.mirror, self.registry.keys
        built = self._builder.build(
            m.revision,
            machines=m.items(keys.machines),
            units=m.items(keys.units),
            targets=m.items(keys.targets),
            bodies=m.items(keys.bodies),
            schedule=m.items(keys.schedules),
            bodies_revision=m.revision_of(keys.bodies),
        )
        for problem in built.problems:
            logger.warning("%s", problem)
        return built

    async def reconcile(self) -> None:
        """One pass: snapshot, plan, apply, then collect unreferenced bodies. Leader only."""
        leadership = self.election.leadership
        if leadership is None:
            return
        self.passes += 1
        built = self.build()
        garbage = self._unreferenced_bodies(built)  # now: the mirror moves on while we await below
        plan = plan_cluster(built.snapshot)
        if plan.actions:
            await self._apply(plan, leadership)
        else:
            logger.debug("engine pass at revision %d: nothing to do", plan.revision)
        if garbage:
            # A repeat before the mirror sees the deletes writes nothing: the compares on mod revision fail.
            deleted = await self.registry.collect_bodies(garbage, leadership)
            if deleted:
                logger.info('action=collect bodies=%d reason="no unit references them"', deleted)

    async def _apply(self, plan: EnginePlan, leadership: Compare) -> None:
        try:
            revision = await self.registry.apply_plan(plan, leadership)
        except CASConflict as exc:
            logger.warning("engine plan of %d actions not applied: %s", len(plan.actions), exc)
            return
        for action in plan.actions:
            logger.info("%s", _describe(action))
        await self._caught_up(revision, self.registry.keys.schedules)

    def _unreferenced_bodies(self, built: Built) -> dict[str, int]:
        """Bodies (hash -> mod revision) that nothing in ``built`` references, as the mirror is now.

        A body newer than what the units/ or schedule/ watch has delivered may belong to a unit that is not
        mirrored yet (they are written in one Txn but arrive on different watches): it is kept.
        """
        keys, m = self.registry.keys, self.mirror
        horizon = min(m.revision_of(keys.units), m.revision_of(keys.schedules))
        garbage: dict[str, int] = {}
        for kv in m.items(keys.bodies).values():
            try:
                unit_hash = keys.body_hash(kv.key)  # other keys under bodies/ are not ours to delete
            except BadRecord:
                continue  # reported by the builder
            if kv.mod_revision <= horizon and unit_hash not in built.referenced:
                garbage[unit_hash] = kv.mod_revision
        return garbage

    async def _caught_up(self, revision: int, prefix: str) -> None:
        """Let the mirror see our own writes before the next pass plans (else it would redo them)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ttl):
                await self.mirror.wait_for(revision, prefix)


def _describe(action: Action) -> str:
    machine = action.machine_id[:SHORT_ID_LENGTH]
    if isinstance(action, Schedule):
        return (
            f"action=schedule unit={action.unit} machine={machine} state={action.state.value}"
            f' reason="{action.reason}"'
        )
    return f'action=unschedule unit={action.unit} machine={machine} reason="{action.reason}"'
