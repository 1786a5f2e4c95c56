"""MemoryKV: an in-memory KV with etcd v3's semantics, for unit tests of everything above the KV port.

It keeps etcd's revision arithmetic (one revision per write request or writing Txn, none for reads, failed
compares or deletes that match nothing), per-key versions, an MVCC history (ranges at an old revision,
watches from an old revision, ``compact``) and leases whose expiry deletes the attached keys in one revision.

Time comes from an injectable ``clock`` (seconds, monotonic): a test advances its own clock and the next call
(or ``expire_leases()``) expires what is due, so lease tests never sleep. A timer on the running loop also
expires leases on time when the clock is the real one.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from fleetd.errors import RegistryError
from fleetd.registry.kv import (
    MAX_TXN_OPS,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KeyValue,
    KVClosed,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchCompacted,
    WatchEvent,
)

__all__ = ["MemoryKV"]

_FIRST_LEASE_ID = 0x7A11_0000_0001


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Event:
    revision: int
    type: EventType
    kv: KeyValue
    prev: KeyValue | None


def _in_range(key: str, prefix: str, is_prefix: bool) -> bool:
    return key.startswith(prefix) if is_prefix else key == prefix


def _compare(op: CompareOp, left: str | int, right: str | int) -> bool:
    if isinstance(left, str):
        a: bytes | int = left.encode()
        b: bytes | int = str(right).encode()
    else:
        a, b = left, int(right)
    if op is CompareOp.EQUAL:
        return a == b
    if op is CompareOp.NOT_EQUAL:
        return a != b
    if op is CompareOp.GREATER:
        return a > b  # type: ignore[operator]
    return a < b  # type: ignore[operator]


class MemoryKV:
    """An in-memory etcd v3 subset honouring the ``KV`` protocol."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._revision = 1  # etcd's empty store is at revision 1
        self._compacted = 0
        self._live: dict[str, KeyValue] = {}
        self._history: dict[str, list[tuple[int, KeyValue | None]]] = {}
        self._events: list[_Event] = []
        self._event_revs: list[int] = []
        self._leases: dict[int, _Lease] = {}
        self._next_lease = _FIRST_LEASE_ID
        self._pending: list[_Event] = []
        self._waiters: set[asyncio.Event] = set()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None

    # -- reads -----------------------------------------------------------------------------------------------

    @property
    def watchers(self) -> int:
        """Watches open now (a test helper; etcd's etcd_debugging_mvcc_watcher_total)."""
        return len(self._waiters)

    @property
    def revision(self) -> int:
        """The current store revision (a test helper; not part of the KV protocol)."""
        return self._revision

    async def get(self, key: str) -> KeyValue | None:
        self._enter()
        return self._live.get(key)

    async def range(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""
    ) -> RangeResult:
        self._enter()
        kvs = self._range(prefix, True, revision)
        if start:
            kvs = kvs[bisect.bisect_left(kvs, start, key=lambda kv: kv.key) :]
        return RangeResult(kvs[:limit] if limit > 0 else kvs, self._revision)

    def _range(self, key: str, is_prefix: bool, revision: int = 0) -> tuple[KeyValue, ...]:
        if revision <= 0 or revision == self._revision:
            if not is_prefix:
                kv = self._live.get(key)
                return (kv,) if kv else ()
            return tuple(self._live[k] for k in sorted(k for k in self._live if k.startswith(key)))
        if revision > self._revision:
            raise RegistryError("etcdserver: mvcc: required revision is a future revision")
        if revision < self._compacted:
            raise RegistryError("etcdserver: mvcc: required revision has been compacted")
        out: list[KeyValue] = []
        for k in sorted(k for k in self._history if _in_range(k, key, is_prefix)):
            versions = self._history[k]
            i = bisect.bisect_right(versions, revision, key=lambda entry: entry[0])
            if i and (kv := versions[i - 1][1]) is not None:
                out.append(kv)
        return tuple(out)

    # -- writes ----------------------------------------------------------------------------------------------

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        self._enter()
        self._check_leases([Put(key, value, lease)])
        self._begin()
        self._put(key, value, lease)
        return self._commit()

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self._enter()
        self._begin()
        deleted = self._delete(key, prefix)
        self._commit()
        return deleted

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._enter()
        for branch in (success, failure):
            if len(branch) > MAX_TXN_OPS:
                raise RegistryError("etcdserver: too many operations in txn request")
            _check_overlaps(branch)
        succeeded = all(self._holds(c) for c in compares)
        ops = success if succeeded else failure
        self._check_leases([op for op in ops if isinstance(op, Put)])
        self._begin()
        responses: list[tuple[KeyValue, ...]] = []
        for op in ops:
            if isinstance(op, Get):
                responses.append(self._range(op.key, op.prefix))
            elif isinstance(op, Put):
                self._put(op.key, op.value, op.lease)
                responses.append(())
            else:
                self._delete(op.key, op.prefix)
                responses.append(())
        return TxnResult(succeeded, self._commit(), tuple(responses))

    def _holds(self, c: Compare) -> bool:
        kv = self._live.get(c.key)
        if kv is None:
            if c.target is CompareTarget.VALUE:
                return False  # etcd: a value compare on a missing key always fails
            kv = KeyValue(c.key, "", 0, 0, 0, 0)
        actual: str | int
        if c.target is CompareTarget.VALUE:
            actual = kv.value
        elif c.target is CompareTarget.VERSION:
            actual = kv.version
        elif c.target is CompareTarget.CREATE:
            actual = kv.create_revision
        elif c.target is CompareTarget.MOD:
            actual = kv.mod_revision
        else:
            actual = kv.lease
        return _compare(c.op, actual, c.value)

    def _check_leases(self, puts: Sequence[Put]) -> None:
        for op in puts:
            if op.lease and op.lease not in self._leases:
                raise RegistryError("etcdserver: requested lease not found")

    def _begin(self) -> None:
        self._pending = []

    def _put(self, key: str, value: str, lease: int) -> None:
        rev = self._revision + 1
        prev = self._live.get(key)
        if prev is not None and prev.lease and prev.lease != lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(key)
        if lease:
            self._leases[lease].keys.add(key)
        kv = KeyValue(
            key,
            value,
            create_revision=prev.create_revision if prev else rev,
            mod_revision=rev,
            version=prev.version + 1 if prev else 1,
            lease=lease,
        )
        self._live[key] = kv
        self._pending.append(_Event(rev, EventType.PUT, kv, prev))

    def _delete(self, key: str, is_prefix: bool) -> int:
        rev = self._revision + 1
        doomed = self._range(key, is_prefix)
        for prev in doomed:
            del self._live[prev.key]
            if prev.lease in self._leases:
                self._leases[prev.lease].keys.discard(prev.key)
            tomb = KeyValue(prev.key, "", 0, rev, 0, 0)
            self._pending.append(_Event(rev, EventType.DELETE, tomb, prev))
        return len(doomed)

    def _commit(self) -> int:
        if self._pending:
            self._revision += 1
            for event in self._pending:
                self._history.setdefault(event.kv.key, []).append(
                    (event.revision, event.kv if event.type is EventType.PUT else None)
                )
                self._events.append(event)
                self._event_revs.append(event.revision)
            self._pending = []
            for waiter in self._waiters:
                waiter.set()
        return self._revision

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (etcd's Compact; a test helper, not part of the KV protocol)."""
        self._enter()
        if revision <= self._compacted:
            raise RegistryError("etcdserver: mvcc: required revision has been compacted")
        if revision > self._revision:
            raise RegistryError("etcdserver: mvcc: required revision is a future revision")
        self._compacted = revision
        cut = bisect.bisect_left(self._event_revs, revision)
        del self._events[:cut], self._event_revs[:cut]
        for key in list(self._history):
            versions = self._history[key]
            keep = bisect.bisect_right(versions, revision, key=lambda entry: entry[0]) - 1
            rest = versions[max(keep, 0) :]
            if rest and rest[0][1] is None and len(rest) == 1:
                del self._history[key]
            else:
                self._history[key] = rest

    # -- watches ---------------------------------------------------------------------------------------------

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        self._enter()
        return self._watch(prefix, start_revision or self._revision + 1, prev_kv)

    async def _watch(self, prefix: str, start: int, prev_kv: bool) -> AsyncIterator[Sequence[WatchEvent]]:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            if self._compacted and start < self._compacted:
                raise WatchCompacted(self._compacted)
            next_rev = start
            while not self._closed:
                waiter.clear()
                i = bisect.bisect_left(self._event_revs, next_rev)
                batch = [
                    WatchEvent(e.type, e.kv, e.prev.value if prev_kv and e.prev else None)
                    for e in self._events[i:]
                    if e.kv.key.startswith(prefix)
                ]
                next_rev = self._revision + 1
                if batch:
                    yield tuple(batch)
                    continue
                await waiter.wait()
        finally:
            self._waiters.discard(waiter)

    # -- leases ----------------------------------------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        self._enter()
        lease_id = self._next_lease
        self._next_lease += 1
        seconds = max(1, math.ceil(ttl))
        self._leases[lease_id] = _Lease(seconds, self._clock() + seconds)
        self._arm_timer()
        return lease_id

    async def keep_alive(self, lease_id: int) -> float:
        self._enter()
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.expires_at = self._clock() + lease.ttl
        return float(lease.ttl)

    async def revoke(self, lease_id: int) -> None:
        self._enter()
        self._revoke(lease_id)

    async def time_to_live(self, lease_id: int) -> float:
        self._enter()
        lease = self._leases.get(lease_id)
        return -1.0 if lease is None else lease.expires_at - self._clock()

    def expire_leases(self) -> None:
        """Revoke every lease whose time is up (each in its own revision, as etcd does)."""
        now = self._clock()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        self._begin()
        for key in sorted(lease.keys):
            self._delete(key, False)
        self._commit()

    def _arm_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._leases and not self._closed:
            due = min(lease.expires_at for lease in self._leases.values()) - self._clock()
            self._timer = loop.call_later(max(due, 0.0) + 0.01, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self.expire_leases()
            self._arm_timer()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise KVClosed()
        self.expire_leases()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in self._waiters:
            waiter.set()


def _check_overlaps(ops: Sequence[Op]) -> None:
    """etcd refuses a Txn branch that puts one key twice or deletes a key it also puts."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    if len(set(puts)) != len(puts):
        raise RegistryError("etcdserver: duplicate key given in txn request")
    for op in ops:
        if isinstance(op, Delete) and any(_in_range(key, op.key, op.prefix) for key in puts):
            raise RegistryError("etcdserver: duplicate key given in txn request")
