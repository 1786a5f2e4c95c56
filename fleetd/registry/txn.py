"""The one Txn packer (pure): groups of ops in, Txns that etcd accepts out.

Every multi-key write and every read of many keys by name goes through ``pack``. A Txn it yields holds at
most ``max_ops`` compares plus ops (etcd's ``--max-txn-ops``, 128 by default, counts compares and each branch
separately; counting them together is the safe side) and at most ``max_bytes`` of keys and values (etcd
refuses a request over ``--max-request-bytes``, 1.5 MiB by default; the budget of 1 MiB leaves the rest for
the framing that ``OVERHEAD`` per entry only estimates).

- A group is atomic: its compares and ops land in one Txn, never split. A group that cannot fit in an empty
  Txn raises ``TxnTooLarge`` naming its first key, before anything is yielded: nothing over the limit is
  ever sent, and nothing of the change is written.
- ``shared`` compares (an engine's leadership) go first in every Txn and count against every Txn's room.
- An op or compare equal to one already in the Txn is not repeated (two units with one body put it once;
  etcd refuses a Txn that puts one key twice) and costs nothing.
- Order is kept: groups go out in the order given, each Txn holding a run of consecutive groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleetd.errors import RegistryError
from fleetd.registry.kv import MAX_TXN_OPS, Compare, Op, Put

__all__ = ["MAX_TXN_BYTES", "MAX_TXN_OPS", "OVERHEAD", "Batch", "Group", "TxnTooLarge", "pack", "size"]

MAX_TXN_BYTES = 1024 * 1024  # keys + values per Txn; etcd's request limit is 1.5 MiB
OVERHEAD = 32  # bytes per op or compare beyond its key and value: protobuf tags, lengths, lease, range end

T = TypeVar("T")


class TxnTooLarge(RegistryError):
    """One atomic change does not fit in a single Txn."""

    def __init__(self, key: str, ops: int, size: int, max_ops: int, max_bytes: int) -> None:
        self.key = key
        super().__init__(
            f"the change to {key} is too large for one etcd transaction ({ops} operations, {size} bytes;"
            f" the limit is {max_ops} operations and {max_bytes} bytes)"
        )


@dataclass(frozen=True, slots=True)
class Group(Generic[T]):
    """Compares and ops that must be written together; ``tag`` comes back with the Txn that holds them."""

    tag: T
    ops: tuple[Op, ...]
    compares: tuple[Compare, ...] = ()


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """One Txn: the shared compares, then the groups' compares; their ops; their tags in group order."""

    compares: tuple[Compare, ...]
    ops: tuple[Op, ...]
    tags: tuple[T, ...]


def _text_bytes(text: str) -> int:
    # surrogatepass: a lone surrogate (bytes that were not UTF-8) counts 3, never fewer than it costs
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def size(entry: Op | Compare) -> int:
    """Bytes one op or compare adds to a Txn request (an upper bound)."""
    total = OVERHEAD + _text_bytes(entry.key)
    if isinstance(entry, Put):
        total += _text_bytes(entry.value)
    elif isinstance(entry, Compare):
        total += _text_bytes(entry.value) if isinstance(entry.value, str) else 0
    if not isinstance(entry, (Put, Compare)) and entry.prefix:
        total += _text_bytes(entry.key)  # the range end
    return total


Sized = tuple[tuple[Op | Compare, int], ...]  # a group's distinct entries, compares first, with their sizes


def _sized(group: Group[T]) -> Sized:
    return tuple((entry, size(entry)) for entry in dict.fromkeys((*group.compares, *group.ops)))


class _Txn(Generic[T]):
    """The Txn being filled: what it holds, how much room is used."""

    def __init__(self, shared: Sequence[Compare]) -> None:
        self.compares: list[Compare] = list(dict.fromkeys(shared))
        self.ops: list[Op] = []
        self.tags: list[T] = []
        self.seen: set[Op | Compare] = set(self.compares)
        self.count = len(self.compares)
        self.bytes = sum(size(c) for c in self.compares)

    def cost(self, sized: Sized) -> tuple[int, int]:
        """(ops, bytes) a group would add: entries already held are free."""
        count = total = 0
        for entry, entry_size in sized:
            if entry not in self.seen:
                count += 1
                total += entry_size
        return count, total

    def add(self, tag: T, sized: Sized) -> None:
        for entry, entry_size in sized:
            if entry in self.seen:
                continue
            self.seen.add(entry)
            if isinstance(entry, Compare):
                self.compares.append(entry)
            else:
                self.ops.append(entry)
            self.count += 1
            self.bytes += entry_size
        self.tags.append(tag)

    def batch(self) -> Batch[T]:
        return Batch(tuple(self.compares), tuple(self.ops), tuple(self.tags))


def pack(
    groups: Iterable[Group[T]],
    shared: Sequence[Compare] = (),
    *,
    max_ops: int = MAX_TXN_OPS,
    max_bytes: int = MAX_TXN_BYTES,
) -> Iterator[Batch[T]]:
    """Pack ``groups`` in order into as few Txns as the limits allow (see the module docstring).

    Raises TxnTooLarge (before yielding anything) when a group alone, with the shared compares, exceeds a
    limit. A group with no ops and no compares still comes back in a Txn's tags.
    """
    listed = [(group, _sized(group)) for group in groups]  # each entry's size reckoned once
    empty: _Txn[T] = _Txn(shared)
    for group, sized in listed:
        ops, extra = empty.cost(sized)
        if empty.count + ops > max_ops or empty.bytes + extra > max_bytes:
            first = (*group.ops, *group.compares, *shared)[0]
            raise TxnTooLarge(first.key, empty.count + ops, empty.bytes + extra, max_ops, max_bytes)
    current: _Txn[T] = _Txn(shared)
    for group, sized in listed:
        ops, extra = current.cost(sized)
        if current.tags and (current.count + ops > max_ops or current.bytes + extra > max_bytes):
            yield current.batch()
            current = _Txn(shared)
        current.add(group.tag, sized)
    if current.tags:
        yield current.batch()
