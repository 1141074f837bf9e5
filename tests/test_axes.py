"""The unification solver: products, sums, refinement and conflicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipm.discovery.axes import AxisSolver
from cipm.discovery.refine import refine_product, refine_sum


def test_refine_product_nests_mixed_radix() -> None:
    assert refine_product([2, 16], [8, 4]) == ([2, 4, 4], [[0], [1, 2]], [[0, 1], [2]])
    assert refine_product([6, 4], [4, 6]) is None


@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_refine_sum_covers_both(left: list[int], right: list[int]) -> None:
    if sum(left) != sum(right):
        right = [*right, sum(left) - sum(right)] if sum(left) > sum(right) else right
        left = [*left, sum(right) - sum(left)] if sum(right) > sum(left) else left
    fine, ls, rs = refine_sum(left, right)
    assert sum(fine) == sum(left)
    for parts, spans in ((left, ls), (right, rs)):
        flat = [i for span in spans for i in span]
        assert flat == list(range(len(fine)))
        assert [sum(fine[i] for i in span) for span in spans] == parts


def test_heads_split_meets_batch_merge() -> None:
    """(B, E) -> (B*H, D) and E = H x D elsewhere: H and D line up."""
    s = AxisSolver()
    e1, e2 = s.new(16), s.new(16)
    h, d = s.split(e1, "product", [4, 4])
    h2, d2 = s.split(e2, "product", [4, 4])
    s.unify(e1, e2)
    assert s.find(h) == s.find(h2) and s.find(d) == s.find(d2)


def test_rotate_half_ties_the_two_halves() -> None:
    """x + cat(x2, x1): pairs (i, i + D/2) move together."""
    s = AxisSolver()
    x = s.new(8)
    x1, x2 = s.split(x, "sum", [4, 4])
    s.unify(x, s.join("sum", [x2, x1]))
    assert s.find(x1) == s.find(x2)
    fixed, _ = s.solve()
    assert s.find(x1) not in fixed


def test_product_against_sum_fixes_both_sides() -> None:
    s = AxisSolver()
    a, b = s.new(6), s.new(6)
    parts = s.split(a, "product", [2, 3])
    segs = s.split(b, "sum", [3, 3])
    s.unify(a, b)
    fixed, _ = s.solve()
    assert {s.find(p) for p in parts + segs} <= fixed


def test_fixed_passes_down_and_tags_pass_down() -> None:
    s = AxisSolver()
    x = s.new(12)
    h, d = s.split(x, "product", [3, 4])
    s.tag(x, "hidden")
    s.tag(h, "heads")
    y = s.new(12)
    y1, _ = s.split(y, "sum", [6, 6])
    s.fix(y)
    fixed, tags = s.solve()
    assert s.find(y1) in fixed and s.find(h) not in fixed
    assert tags[s.find(h)] == {"hidden", "heads"} and tags[s.find(d)] == {"hidden"}


def test_a_failed_transaction_leaves_no_trace() -> None:
    """Unions (with path compression), decompositions, fixed marks, tags and new atoms made
    inside a transaction that raises are all undone; those of one that completes stay."""
    s = AxisSolver()
    a, b, c, d = (s.new(6) for _ in range(4))
    s.unify(a, b)
    with s.transaction():
        s.unify(c, d)
    before = (list(s._parent), list(s._size), dict(s._decomp), set(s._fixed), dict(s._tags))
    with pytest.raises(RuntimeError), s.transaction():
        s.unify(b, c)
        s.find(d)  # compresses d's path onto the new root
        s.split(a, "product", [2, 3])
        s.fix(d)
        s.tag(c, "hidden")
        s.new(4)
        raise RuntimeError("a rule's bug")
    after = (list(s._parent), list(s._size), dict(s._decomp), set(s._fixed), dict(s._tags))
    assert after[:4] == before[:4] and {k: v for k, v in after[4].items() if v} == before[4]
    assert s.find(a) == s.find(b) and s.find(c) == s.find(d) and s.find(a) != s.find(c)
