"""The Txn packer: splits by ops and by bytes, keeps groups whole, carries shared compares, refuses a group
that cannot fit, never repeats an op in one Txn."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.registry.kv import Compare, CompareOp, CompareTarget, Delete, Get, Op, Put
from fleetd.registry.txn import MAX_TXN_BYTES, MAX_TXN_OPS, OVERHEAD, Group, TxnTooLarge, pack, size

LEADER = Compare("/p/engine/leader", CompareTarget.CREATE, CompareOp.EQUAL, 7)


def put(key: str, nbytes: int = 1) -> Put:
    return Put(key, "x" * nbytes)


def unit(name: str, nbytes: int = 1) -> Group[str]:
    """A unit's atomic change: body, record, target."""
    return Group(name, (put(f"b/{name}", nbytes), put(f"u/{name}"), put(f"t/{name}")))


def guarded(name: str) -> Group[str]:
    return Group(name, (put(f"t/{name}"),), (Compare(f"u/{name}", CompareTarget.MOD, CompareOp.EQUAL, 3),))


@dataclass(frozen=True)
class Case:
    id: str
    groups: list[Group[str]]
    shared: tuple[Compare, ...]
    max_ops: int
    max_bytes: int
    want: list[list[str]]  # tags per Txn


CASES = [
    Case("nothing to write: no Txn", [], (), 128, MAX_TXN_BYTES, []),
    Case("one group: one Txn", [unit("a")], (), 128, MAX_TXN_BYTES, [["a"]]),
    Case(
        "groups fill a Txn up to the op limit",
        [unit(c) for c in "abcd"],
        (),
        6,
        MAX_TXN_BYTES,
        [["a", "b"], ["c", "d"]],
    ),
    Case(
        "a group that would cross the op limit opens the next Txn",
        [unit(c) for c in "abc"],
        (),
        8,
        MAX_TXN_BYTES,
        [["a", "b"], ["c"]],
    ),
    Case(
        "compares count against the op limit",
        [guarded(c) for c in "abcde"],
        (),
        4,
        MAX_TXN_BYTES,
        [["a", "b"], ["c", "d"], ["e"]],
    ),
    Case(
        "shared compares take room in every Txn",
        [unit(c) for c in "abc"],
        (LEADER,),
        7,
        MAX_TXN_BYTES,
        [["a", "b"], ["c"]],
    ),
    Case(
        "bytes split Txns that the op limit would allow",
        [unit(c, 400) for c in "abcd"],
        (),
        128,
        1000 + 6 * OVERHEAD + 20,
        [["a", "b"], ["c", "d"]],
    ),
    Case(
        "small groups fill around a large one",
        [unit("a", 10), unit("b", 800), unit("c", 10)],
        (),
        128,
        1000,
        [["a"], ["b"], ["c"]],
    ),
    Case(
        "exactly at the byte limit: one Txn",
        [Group("a", (Put("k", "v" * (1000 - OVERHEAD - 1)),))],
        (),
        128,
        1000,
        [["a"]],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pack(case: Case) -> None:
    batches = list(pack(case.groups, case.shared, max_ops=case.max_ops, max_bytes=case.max_bytes))
    assert [list(b.tags) for b in batches] == case.want
    for batch in batches:
        assert len(batch.compares) + len(batch.ops) <= case.max_ops
        assert sum(size(e) for e in (*batch.compares, *batch.ops)) <= case.max_bytes
        assert batch.compares[: len(case.shared)] == case.shared


def test_a_group_is_never_split_and_keeps_its_compares() -> None:
    groups = [guarded(c) for c in "abcdefg"]
    for batch in pack(groups, (LEADER,), max_ops=5):
        for tag in batch.tags:
            assert Put(f"t/{tag}", "x") in batch.ops
            assert Compare(f"u/{tag}", CompareTarget.MOD, CompareOp.EQUAL, 3) in batch.compares


def test_an_op_already_in_the_txn_is_not_repeated_and_costs_nothing() -> None:
    shared_body = [Group(n, (Put("b/h", "body"), put(f"u/{n}"))) for n in "abc"]
    [batch] = pack(shared_body, max_ops=4)
    assert batch.ops == (Put("b/h", "body"), put("u/a"), put("u/b"), put("u/c"))
    # in the next Txn the body is put again: each Txn holds every group's whole change
    first, second = pack(shared_body, max_ops=3)
    assert first.ops == (Put("b/h", "body"), put("u/a"), put("u/b"))
    assert second.ops == (Put("b/h", "body"), put("u/c"))


def test_a_compare_equal_to_a_shared_one_is_not_repeated() -> None:
    [batch] = pack([Group("a", (put("k"),), (LEADER,))], (LEADER,))
    assert batch.compares == (LEADER,)


@pytest.mark.parametrize(
    ("group", "shared", "message"),
    [
        (
            unit("big", MAX_TXN_BYTES),
            (),
            r"^the change to b/big is too large for one etcd transaction \(3 operations, \d+ bytes;"
            r" the limit is 128 operations and 1048576 bytes\)$",
        ),
        (
            Group("many", tuple(put(f"k{i}") for i in range(128))),
            (LEADER,),
            r"^the change to k0 is too large .*\(129 operations",
        ),
    ],
    ids=["over the byte budget", "over the op limit with the shared compare"],
)
def test_a_group_that_cannot_fit_is_refused_before_anything_is_yielded(
    group: Group[str], shared: tuple[Compare, ...], message: str
) -> None:
    batches = pack([unit("small"), group], shared)
    with pytest.raises(TxnTooLarge, match=message):
        next(batches)


def test_size_counts_keys_values_range_ends_and_non_utf8_text() -> None:
    assert size(Put("ab", "cde")) == OVERHEAD + 5
    assert size(Delete("ab")) == size(Get("ab")) == OVERHEAD + 2
    assert size(Delete("ab", prefix=True)) == size(Get("ab", prefix=True)) == OVERHEAD + 4
    assert size(Compare("ab", CompareTarget.VALUE, CompareOp.EQUAL, "xyz")) == OVERHEAD + 5
    assert size(Compare("ab", CompareTarget.MOD, CompareOp.EQUAL, 10**9)) == OVERHEAD + 2
    assert size(Put("k", "é\udcff")) == OVERHEAD + 1 + 2 + 3


def test_the_default_budget_fits_etcds_request_limit() -> None:
    # 128 entries of framing on top of the counted bytes stay well under etcd's 1.5 MiB
    assert MAX_TXN_BYTES + MAX_TXN_OPS * 64 < 1536 * 1024
    assert MAX_TXN_OPS == 128


@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 300)), max_size=40),
    st.integers(0, 2),
)
def test_property_every_group_once_in_order_within_limits(
    shapes: list[tuple[int, int, int]], nshared: int
) -> None:
    shared = tuple(Compare(f"s{i}", CompareTarget.CREATE, CompareOp.EQUAL, i) for i in range(nshared))
    groups = [
        Group(
            i,
            tuple(Put(f"g{i}/o{j}", "v" * value) for j in range(nops)),
            tuple(Compare(f"g{i}/c{j}", CompareTarget.MOD, CompareOp.EQUAL, j) for j in range(ncompares)),
        )
        for i, (nops, ncompares, value) in enumerate(shapes)
    ]
    max_ops, max_bytes = 10, 1500
    try:
        batches = list(pack(groups, shared, max_ops=max_ops, max_bytes=max_bytes))
    except TxnTooLarge:
        assert any(
            nshared + nops + nc > max_ops or sum(size(e) for e in (*shared, *g.ops, *g.compares)) > max_bytes
            for g, (nops, nc, _) in zip(groups, shapes, strict=True)
        )
        return
    assert [t for b in batches for t in b.tags] == list(range(len(groups)))
    for batch in batches:
        assert batch.tags
        assert batch.compares[:nshared] == shared
        assert len(batch.compares) + len(batch.ops) <= max_ops
        assert sum(size(e) for e in (*batch.compares, *batch.ops)) <= max_bytes
        ops: list[Op] = [op for t in batch.tags for op in groups[t].ops]
        assert list(batch.ops) == ops
    # greedy: no two neighbouring Txns could have been one
    for left, right in itertools.pairwise(batches):
        merged = len(left.compares) + len(left.ops) + len(right.compares) - nshared + len(right.ops)
        size_merged = sum(size(e) for e in (*left.compares, *left.ops, *right.compares[nshared:], *right.ops))
        assert merged > max_ops or size_merged > max_bytes
