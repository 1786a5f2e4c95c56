"""The KV port: the small part of etcd v3 that fleet uses, as a typing.Protocol.

Two implementations honour it and one contract suite runs on both: ``fleetd.registry.etcd.EtcdKV`` (the real
etcd, the only gRPC importer) and ``fleetd.registry.memory.MemoryKV`` (in-memory, for unit tests). Everything
above it (keyspace, registry operations, engine, agent, fleetctl) is written once against this port.

Keys and values are text (UTF-8 on the wire). Revisions, create/mod revisions, versions and leases have
etcd's meaning. Every call may raise ``RegistryUnavailable`` (no endpoint answered in time) or
``RegistryError`` (anything else etcd refused); a failed Txn compare is not an error: ``TxnResult.succeeded``
is False.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetd.errors import RegistryError

__all__ = [
    "KV",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "EventType",
    "Get",
    "KVClosed",
    "KeyValue",
    "Op",
    "Put",
    "RangeResult",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
    "prefix_end",
]

# Keys per range request when a whole prefix is read. etcd 3.4 walks its index over the whole rest of the
# range for each limited page, so fewer, larger pages cost it less (measured: a cold list-units of 100,000
# states took 1.10 s with 2,000-key pages, 0.85 s with 10,000).
RANGE_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int  # the store revision the range was served at


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    kv: KeyValue  # for DELETE: the key, value "", and mod_revision = the deleting revision
    prev_value: str | None = None  # only when the watch asked for prev_kv


class CompareTarget(enum.Enum):
    VALUE = "value"
    VERSION = "version"
    CREATE = "create"  # create_revision
    MOD = "mod"  # mod_revision
    LEASE = "lease"


class CompareOp(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    GREATER = ">"
    LESS = "<"


@dataclass(frozen=True, slots=True)
class Compare:
    """A Txn guard on one key. A missing key has version/create/mod/lease 0; a VALUE compare on a missing
    key always fails (as in etcd), so test absence with ``VERSION = 0``."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: str | int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per executed op (of the branch taken): the KeyValues a Get returned, () for Put/Delete.
    responses: tuple[tuple[KeyValue, ...], ...] = ()


class WatchCompacted(RegistryError):
    """The revision a watch wanted to resume from was compacted away: the caller must relist."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"watch revision compacted (oldest available: {compact_revision}); relist required")


class KVClosed(RegistryError):
    """The KV was closed: every later call raises this, and long-running readers should stop."""

    def __init__(self) -> None:
        super().__init__("the KV is closed")


MAX_TXN_OPS = 128


def prefix_end(prefix: str) -> str:
    """The exclusive range end covering every key that starts with ``prefix`` (etcd's convention)."""
    data = bytearray(prefix.encode())
    for i in range(len(data) - 1, -1, -1):
        if data[i] < 0xFF:
            data[i] += 1
            return bytes(data[: i + 1]).decode(errors="surrogateescape")
    return "\0"


class KV(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def range(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""
    ) -> RangeResult:
        """Every key starting with ``prefix``, sorted by key, at ``revision`` (0 = latest); at most ``limit``
        of them (0 = all), from ``start`` on (inclusive; "" = from the first)."""
        ...

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        """Write one key; returns the new store revision."""
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete one key (or every key under a prefix); returns how many were deleted."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomically: if every compare holds, run ``success`` else ``failure``. At most MAX_TXN_OPS ops."""
        ...

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        """Batches of events on keys under ``prefix`` from ``start_revision`` on, in revision order.

        Survives disconnects by resuming from the last delivered revision + 1. Raises WatchCompacted when the
        wanted revision is gone. Ends when the consumer stops iterating (``aclose``) or the KV is closed.
        """
        ...

    async def grant(self, ttl: float) -> int:
        """Create a lease of ``ttl`` seconds (rounded up to whole seconds, at least 1); returns its ID."""
        ...

    async def keep_alive(self, lease_id: int) -> float:
        """Refresh a lease once; returns the TTL granted, or 0 when the lease no longer exists."""
        ...

    async def revoke(self, lease_id: int) -> None:
        """Revoke a lease: every key attached to it is deleted. A missing lease is not an error."""
        ...

    async def time_to_live(self, lease_id: int) -> float:
        """Seconds left on a lease; 0 (or less) when it does not exist."""
        ...

    async def close(self) -> None: ...
