"""Engine leader election: a lease plus a create-if-absent Txn on one key.

A candidate that finds the key absent takes a lease of its own, creates the key on it and leads; one that
finds it held (or loses the race to create it) holds no lease: it watches the key and campaigns again the
moment it is deleted (the leader resigned, or its lease expired: within one TTL of the leader dying). So a
standby costs etcd one watch and nothing per TTL: with a lease each, 5,000 standbys kept alive 1,500 leases
a second. The leader's writes compare on the key's create revision (``leadership``), which names one term:
a deposed leader cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from fleetd.cancel import first_failure
from fleetd.errors import RegistryError
from fleetd.registry.kv import KV, Compare, CompareOp, CompareTarget, Delete, EventType, Get, Put
from fleetd.retry import Backoff, Sleep

__all__ = ["Election"]

logger = logging.getLogger(__name__)

ELECTION_JITTER = 0.25  # seconds at most a candidate waits before it looks at a key that changed


class Election:
    """Campaign for ``key`` as ``candidate`` with leases of ``ttl`` seconds; run ``run()`` as a task."""

    def __init__(
        self, kv: KV, key: str, candidate: str, ttl: float, *, retry_delay: float = 1.0,
        sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self.key = key
        self.candidate = candidate
        self.ttl = ttl
        # a steady delay, not a growing one: a candidate must campaign again soon after etcd is back
        self._backoff = Backoff(retry_delay, retry_delay)
        self._sleep = sleep
        self._lease = 0
        self._term = 0  # create revision of our leader key while we lead
        self.leader: str | None = None  # the leader last seen (None: unknown or none)
        self.changed = asyncio.Event()  # set whenever leadership is won or lost; consumers clear it
        self._clock = clock
        self._jitter = min(ELECTION_JITTER, ttl / 20)
        # since when this candidate has talked to etcd without a failure (its view of the cluster is live)
        self.stable_since = clock()

    @property
    def is_leader(self) -> bool:
        return self._term != 0

    @property
    def leadership(self) -> Compare | None:
        """The Txn guard that holds only while this term lasts (None when not leading)."""
        if not self._term:
            return None
        return Compare(self.key, CompareTarget.CREATE, CompareOp.EQUAL, self._term)

    async def run(self) -> None:
        """Campaign until cancelled; keeps the lease alive meanwhile."""
        self.stable_since = self._clock()
        while True:
            failure = await first_failure(self._keep_alive(), self._campaign())
            if not isinstance(failure, RegistryError):
                raise failure or RuntimeError("an election loop ended")
            self.stable_since = self._clock()
            self._set_term(0, None)
            logger.warning("engine election failed, retrying: %s", failure)
            await self._sleep(self._backoff.next())
            await self._drop_expired_lease()

    async def resign(self) -> None:
        """Give up leadership (delete the key if it is still ours) and revoke the lease."""
        if self._term:
            guard = Compare(self.key, CompareTarget.CREATE, CompareOp.EQUAL, self._term)
            with contextlib.suppress(RegistryError):
                await self._kv.txn([guard], [Delete(self.key)])
            logger.info("Engine leadership released by %s", self.candidate)
        self._set_term(0, None)
        if self._lease:
            with contextlib.suppress(RegistryError):
                await self._kv.revoke(self._lease)
            self._lease = 0

    async def _drop_expired_lease(self) -> None:
        """After a failure (an etcd outage longer than the TTL) campaign on a new lease if ours is gone."""
        if not self._lease:
            return
        with contextlib.suppress(RegistryError):
            if await self._kv.time_to_live(self._lease) <= 0:
                logger.info("engine lease %x expired; campaigning on a new lease", self._lease)
                self._lease = 0

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if self._lease and await self._kv.keep_alive(self._lease) <= 0:
                raise RegistryError(f"engine lease {self._lease:x} expired")

    async def _campaign(self) -> None:
        while True:
            revision = await self._attempt()
            if revision:
                await self._until_key_changes(revision + 1)
                # Every standby sees the key go at once: each waits a random part of a moment first, so the
                # first to look takes it and the rest find it held (a read each, not a lease and a Txn each).
                await self._sleep(random.uniform(0.0, self._jitter))

    async def _attempt(self) -> int:
        """Look at the key and lead if it is free: the revision to watch the key from, or 0 to look again."""
        got = await self._kv.txn([], [Get(self.key)])  # a read: the key and the revision it was read at
        held = got.responses[0][0] if got.responses and got.responses[0] else None
        if held is None:
            if not self._lease:
                self._lease = await self._kv.grant(self.ttl)
            result = await self._kv.txn(
                [Compare(self.key, CompareTarget.CREATE, CompareOp.EQUAL, 0)],
                [Put(self.key, self.candidate, self._lease)],
            )
            if not result.succeeded:
                return 0  # another candidate created it first
            self._set_term(result.revision, self.candidate)
            return result.revision
        if held.lease == 0:
            # Every candidate writes the key with a lease; one without is not a leader (it was written by
            # hand) and would block elections forever: remove it, if still the same.
            logger.warning("removing %s: it holds no lease, so no engine wrote it", self.key)
            await self._kv.txn(
                [Compare(self.key, CompareTarget.MOD, CompareOp.EQUAL, held.mod_revision)], [Delete(self.key)]
            )
            return 0
        if held.lease == self._lease:  # ours from an earlier term (etcd was away, the lease lived on)
            self._set_term(held.create_revision, self.candidate)
            return got.revision
        await self._release_lease()
        self._set_term(0, held.value)
        return got.revision

    async def _release_lease(self) -> None:
        """A standby keeps no lease alive: revoke ours (if the revoke fails, it expires within the TTL)."""
        lease, self._lease = self._lease, 0
        if lease:
            with contextlib.suppress(RegistryError):
                await self._kv.revoke(lease)

    async def _until_key_changes(self, start: int) -> None:
        """Return when the leader key is deleted or replaced.

        No periodic re-check: etcd delivers every change from ``start`` on, or ends the watch with an error
        (compaction, a broken stream), which ends the campaign with a RegistryError and ``run`` starts it
        again. A timer here made every standby re-campaign once per TTL: at 5,000 machines, 500 raft
        proposals and 500 new watches a second in an idle cluster."""
        events = self._kv.watch(self.key, start)
        try:
            async for batch in events:
                if any(e.kv.key == self.key and e.type is EventType.DELETE for e in batch):
                    return
                if any(e.kv.key == self.key and e.kv.create_revision != self._term for e in batch):
                    return
            raise RegistryError(f"the watch on {self.key} ended")
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    def _set_term(self, term: int, leader: str | None) -> None:
        if leader != self.leader and leader is not None:
            if self.leader is None:
                logger.info("Engine leader is %s", leader)
            else:
                logger.info("Engine leadership changed from %s to %s", self.leader, leader)
        self.leader = leader
        if bool(term) != bool(self._term):
            self.changed.set()
        self._term = term
