"""Common refinement of two ways to cut one axis into consecutive parts (products or sums)."""

from __future__ import annotations

from itertools import accumulate, pairwise

Spans = list[list[int]]


def refine_sum(left: list[int], right: list[int]) -> tuple[list[int], Spans, Spans]:
    """Cut an axis at every boundary of both segmentations.

    Returns the fine segment sizes and, for each side, which fine segments make up each part.
    """
    cuts = sorted(set(accumulate(left)) | set(accumulate(right)))
    fine = [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    return fine, _spans(fine, left, sum_of=True), _spans(fine, right, sum_of=True)


def refine_product(left: list[int], right: list[int]) -> tuple[list[int], Spans, Spans] | None:
    """Finest factorization (outer to inner) that both factorizations are groupings of.

    A factorization is read as mixed-radix digits; both are groupings of a common one exactly
    when the union of their inner strides forms a divisibility chain. Returns None otherwise
    (e.g. 6x4 against 4x6).
    """
    strides = sorted(
        set(accumulate(reversed(left), lambda a, b: a * b))
        | set(accumulate(reversed(right), lambda a, b: a * b))
    )
    chain = [1, *strides]
    if any(b % a for a, b in pairwise(chain)):
        return None
    fine = [b // a for a, b in pairwise(chain)][::-1]
    return fine, _spans(fine, left, sum_of=False), _spans(fine, right, sum_of=False)


def _spans(fine: list[int], parts: list[int], *, sum_of: bool) -> Spans:
    spans: Spans = []
    i = 0
    for part in parts:
        span: list[int] = []
        acc = 0 if sum_of else 1
        while (acc < part) if sum_of else (acc < part or not span):
            span.append(i)
            acc = acc + fine[i] if sum_of else acc * fine[i]
            i += 1
        spans.append(span)
    return spans
