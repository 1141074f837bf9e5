"""Reading a group's units out of a tensor: one column per unit, everything else as rows."""

from __future__ import annotations

import torch

from cipm.graph import Layout, Leaf, Product, Sum

__all__ = ["unit_blocks", "unit_matrix"]


def unit_matrix(t: torch.Tensor, dim: int, layout: Layout | None, group: str) -> torch.Tensor:
    """`t` as a (samples, units) matrix for `group`, which lives in dimension `dim`.

    Every other dimension (batch, tokens, spatial positions) is folded into samples. Where the
    dim holds more than the group (`layout` a product or sum), the group's factor is moved last
    and the other factors are folded into samples too (heads x head_dim gives head_dim samples
    per head), or the group's segment is cut out. Where a group appears more than once in the
    dim (rotary halves), its first occurrence is read.
    """
    size = t.shape[dim]
    x = t.movedim(dim, -1).reshape(-1, size)
    node: Layout = layout if layout is not None else Leaf(size, group)
    while not isinstance(node, Leaf):
        if isinstance(node, Product):
            i = _child_with(node.factors, group)
            x = x.reshape(x.shape[0], *(f.size for f in node.factors))
            x = x.movedim(1 + i, -1).reshape(-1, node.factors[i].size)
            node = node.factors[i]
        else:
            assert isinstance(node, Sum)
            i = _child_with(node.parts, group)
            start = sum(p.size for p in node.parts[:i])
            x = x[:, start : start + node.parts[i].size]
            node = node.parts[i]
    return x


def unit_blocks(t: torch.Tensor, dim: int, layout: Layout | None, group: str) -> torch.Tensor:
    """`t` as (pre, units, post) blocks, samples being every (pre, post) pair.

    A view (no copy) when the dim holds exactly the group, as a conv map's channels do;
    otherwise `unit_matrix` as (samples, units, 1).
    """
    if layout is None:
        n = t.shape[dim]
        return t.reshape(t.shape[:dim].numel(), n, t.shape[dim + 1 :].numel())
    return unit_matrix(t, dim, layout, group).unsqueeze(-1)


def _child_with(children: tuple[Layout, ...], group: str) -> int:
    for i, child in enumerate(children):
        if _contains(child, group):
            return i
    raise KeyError(f"group '{group}' is not in this layout")


def _contains(layout: Layout, group: str) -> bool:
    if isinstance(layout, Leaf):
        return layout.group == group
    children = layout.factors if isinstance(layout, Product) else layout.parts
    return any(_contains(c, group) for c in children)
