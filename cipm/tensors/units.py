"""Reading a group's units out of a tensor: one column per unit, everything else as rows."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.graph.layout import Layout, Leaf, Path, Product, Sum, groups_in, occurrences

__all__ = ["map_units", "pair_matrix", "select", "unit_blocks", "unit_matrix"]


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


def pair_matrix(t: torch.Tensor, dim: int, layout: Layout, path: Path, inner: int) -> torch.Tensor:
    """(samples, inner units, outer units) for the group at `path` (a factor of a product)
    and the sibling factor at index `inner` of that product, e.g. (.., head_dim, heads)."""
    x, parent = _descend(t.movedim(dim, -1).reshape(-1, t.shape[dim]), layout, path[:-1])
    assert isinstance(parent, Product)
    outer = path[-1]
    x = x.reshape(x.shape[0], *(f.size for f in parent.factors))
    rest = [1 + k for k in range(len(parent.factors)) if k not in (inner, outer)]
    x = x.permute(0, *rest, 1 + inner, 1 + outer)
    return x.reshape(-1, parent.factors[inner].size, parent.factors[outer].size)


def _descend(x: torch.Tensor, node: Layout, path: Path) -> tuple[torch.Tensor, Layout]:
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


def unit_blocks(t: torch.Tensor, dim: int, layout: Layout | None, group: str) -> torch.Tensor:
    """`t` as (pre, units, post) blocks, samples being every (pre, post) pair.

    A view (no copy) when the dim holds exactly the group, as a conv map's channels do;
    otherwise `unit_matrix` as (samples, units, 1).
    """
    if layout is None:
        n = t.shape[dim]
        return t.reshape(t.shape[:dim].numel(), n, t.shape[dim + 1 :].numel())
    return unit_matrix(t, dim, layout, group).unsqueeze(-1)


def select(t: torch.Tensor, positions: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """`t` with dim d indexed by ``positions[d]`` for every d given (a permutation or a
    selection), in one gather: no intermediate of the tensor's size, as chained
    ``index_select`` calls would make."""
    if len(positions) == 1:
        ((dim, index),) = positions.items()
        return t.index_select(dim, index.to(t.device))
    grids = []
    for d, n in enumerate(t.shape):
        shape = [1] * t.dim()
        shape[d] = -1
        chosen = positions.get(d)
        grids.append((torch.arange(n) if chosen is None else chosen).to(t.device).view(shape))
    return t[tuple(grids)]


def map_units(
    t: torch.Tensor, dim: int, layout: Layout, maps: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """`t` with a linear map applied to each group's units in dimension `dim`, wherever the
    layout places the group: with ``maps[g]`` of shape (k, n), unit i of the result is
    ``sum_j maps[g][i, j] * unit j`` of the input, so the group now has k units.

    One mechanism for every modifier: a permutation matrix (``m[i, p[i]] = 1``) gives
    ``index_select(dim, p)``; rows of the identity keep some units (pruning); a doubly
    stochastic matrix permutes softly (Sinkhorn); any (k, n) matrix merges units. Groups not
    in `maps` are left as they are.
    """
    moved = t.movedim(dim, -1)
    out = _map(moved.reshape(-1, layout.size), layout, maps)
    return out.reshape(*moved.shape[:-1], out.shape[-1]).movedim(-1, dim)


def _map(x: torch.Tensor, layout: Layout, maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """x: (rows, layout.size) -> (rows, mapped size)."""
    if not any(g in maps for g in groups_in(layout)):
        return x
    if isinstance(layout, Leaf):
        assert layout.group is not None
        return x @ maps[layout.group].to(x.dtype).T
    if isinstance(layout, Product):
        y = x.reshape(x.shape[0], *(f.size for f in layout.factors))
        for i, factor in enumerate(layout.factors):
            z = y.movedim(1 + i, -1)
            mapped = _map(z.reshape(-1, factor.size), factor, maps)
            y = mapped.reshape(*z.shape[:-1], mapped.shape[-1]).movedim(-1, 1 + i)
        return y.reshape(x.shape[0], -1)
    parts, start = [], 0
    for part in layout.parts:
        parts.append(_map(x[:, start : start + part.size], part, maps))
        start += part.size
    return torch.cat(parts, dim=1)
