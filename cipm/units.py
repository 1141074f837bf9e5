"""Reading a group's units out of a tensor: one column per unit, everything else as rows."""

from __future__ import annotations

import torch

from cipm.graph import Layout, Leaf, Product, Sum

__all__ = ["occurrences", "pair_matrix", "unit_blocks", "unit_matrix"]


def unit_matrix(
    t: torch.Tensor, dim: int, layout: Layout | None, group: str, occurrence: int = 0
) -> torch.Tensor:
    """`t` as a (samples, units) matrix for `group`, which lives in dimension `dim`.

    Every other dimension (batch, tokens, spatial positions) is folded into samples. Where the
    dim holds more than the group (`layout` a product or sum), the group's factor is moved last
    and the other factors are folded into samples too (heads x head_dim gives head_dim samples
    per head), or the group's segment is cut out. Where a group appears more than once in the
    dim (rotary halves), `occurrence` picks which (see `occurrences`).
    """
    x = t.movedim(dim, -1).reshape(-1, t.shape[dim])
    if layout is None:
        return x
    return _descend(x, layout, occurrences(layout, group)[occurrence])[0]


def pair_matrix(
    t: torch.Tensor, dim: int, layout: Layout, path: tuple[int, ...], inner: int
) -> torch.Tensor:
    """(samples, inner units, outer units) for the group at `path` (a factor of a product)
    and the sibling factor at index `inner` of that product, e.g. (.., head_dim, heads)."""
    x, parent = _descend(t.movedim(dim, -1).reshape(-1, t.shape[dim]), layout, path[:-1])
    assert isinstance(parent, Product)
    outer = path[-1]
    x = x.reshape(x.shape[0], *(f.size for f in parent.factors))
    rest = [1 + k for k in range(len(parent.factors)) if k not in (inner, outer)]
    x = x.permute(0, *rest, 1 + inner, 1 + outer)
    return x.reshape(-1, parent.factors[inner].size, parent.factors[outer].size)


def _descend(x: torch.Tensor, node: Layout, path: tuple[int, ...]) -> tuple[torch.Tensor, Layout]:
    """Follow `path` from a (samples, node.size) matrix to the sub-layout it names."""
    for i in path:
        if isinstance(node, Product):
            x = x.reshape(x.shape[0], *(f.size for f in node.factors))
            x = x.movedim(1 + i, -1).reshape(-1, node.factors[i].size)
            node = node.factors[i]
        elif isinstance(node, Sum):
            start = sum(p.size for p in node.parts[:i])
            x = x[:, start : start + node.parts[i].size]
            node = node.parts[i]
    return x, node


def occurrences(layout: Layout, group: str) -> list[tuple[int, ...]]:
    """Paths (child indices from the root) to every leaf of `group` in a layout."""
    if isinstance(layout, Leaf):
        return [()] if layout.group == group else []
    children = layout.factors if isinstance(layout, Product) else layout.parts
    return [(i, *path) for i, c in enumerate(children) for path in occurrences(c, group)]


def unit_blocks(t: torch.Tensor, dim: int, layout: Layout | None, group: str) -> torch.Tensor:
    """`t` as (pre, units, post) blocks, samples being every (pre, post) pair.

    A view (no copy) when the dim holds exactly the group, as a conv map's channels do;
    otherwise `unit_matrix` as (samples, units, 1).
    """
    if layout is None:
        n = t.shape[dim]
        return t.reshape(t.shape[:dim].numel(), n, t.shape[dim + 1 :].numel())
    return unit_matrix(t, dim, layout, group).unsqueeze(-1)
