"""Layouts: how groups lie inside one tensor dimension, and every walk over them.

A `Layout` is a tree: a `Leaf` of one group's units (or of no group: a fixed or trivial
axis), a `Product` of factors, outer to inner (heads x head_dim after a reshape), or a `Sum`
of segments laid end to end (GPT-2's q|k|v). Every fold over that tree lives here, so the rest
of cipm asks a layout questions (which groups, where, which source index at each position)
instead of taking it apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any, Union

import torch

__all__ = [
    "Layout",
    "Leaf",
    "Path",
    "Product",
    "Sum",
    "groups_in",
    "index_map",
    "layout_from_dict",
    "layout_to_dict",
    "leaves",
    "node_at",
    "occurrences",
    "placements",
    "relabel",
    "unit_ids",
]

Path = tuple[int, ...]  # child indices from the root to a node


@dataclass(frozen=True)
class Leaf:
    """Units of one group (`group` is None for an axis no permutation touches)."""

    size: int
    group: str | None = None

    @property
    def children(self) -> tuple[Layout, ...]:
        return ()


@dataclass(frozen=True)
class Product:
    """A dimension that is the product of its factors, outer to inner (row-major)."""

    factors: tuple[Layout, ...]

    @property
    def size(self) -> int:
        return prod(f.size for f in self.factors)

    @property
    def children(self) -> tuple[Layout, ...]:
        return self.factors


@dataclass(frozen=True)
class Sum:
    """A dimension that is its segments laid end to end."""

    parts: tuple[Layout, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def children(self) -> tuple[Layout, ...]:
        return self.parts


Layout = Union[Leaf, Product, Sum]  # noqa: UP007 (a runtime alias)


def groups_in(layout: Layout) -> list[str]:
    """Groups of every leaf in a layout, in order (a group may repeat: rotary halves)."""
    if isinstance(layout, Leaf):
        return [layout.group] if layout.group else []
    return [g for c in layout.children for g in groups_in(c)]


def leaves(layout: Layout) -> list[Leaf]:
    """Every leaf of a layout, in order."""
    if isinstance(layout, Leaf):
        return [layout]
    return [leaf for c in layout.children for leaf in leaves(c)]


def occurrences(layout: Layout, group: str) -> list[Path]:
    """Paths to every leaf of `group` in a layout."""
    if isinstance(layout, Leaf):
        return [()] if layout.group == group else []
    return [(i, *path) for i, c in enumerate(layout.children) for path in occurrences(c, group)]


def node_at(layout: Layout, path: Path) -> Layout:
    """The sub-layout that `path` leads to."""
    for i in path:
        layout = layout.children[i]
    return layout


def placements(
    layout: Layout, unit: int = 1, outer: str | None = None
) -> Iterator[tuple[str, int, str | None]]:
    """(group, unit span, nearest outer group) for every group leaf in a layout."""
    if isinstance(layout, Leaf):
        if layout.group is not None:
            yield layout.group, unit, outer
    elif isinstance(layout, Sum):
        for part in layout.parts:
            yield from placements(part, unit, outer)
    else:
        factors = layout.factors
        for i, factor in enumerate(factors):
            inner = prod(f.size for f in factors[i + 1 :])
            outers = [f.group for f in factors[:i] if isinstance(f, Leaf) and f.group]
            yield from placements(factor, unit * inner, outers[-1] if outers else outer)


def relabel(layout: Layout, leaf: Callable[[Leaf], Leaf]) -> Layout:
    """The same tree with every leaf replaced by `leaf(leaf)` (renamed or resized groups)."""
    if isinstance(layout, Leaf):
        return leaf(layout)
    if isinstance(layout, Product):
        return Product(tuple(relabel(f, leaf) for f in layout.factors))
    return Sum(tuple(relabel(p, leaf) for p in layout.parts))


def index_map(layout: Layout, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Source index of every position of a dimension laid out as `layout`, under `perm`
    (a `Permutation` or a mapping from group to indices)."""
    if isinstance(layout, Leaf):
        return perm[layout.group] if layout.group else torch.arange(layout.size)
    if isinstance(layout, Product):
        idx = torch.zeros((), dtype=torch.long)
        for factor in layout.factors:
            idx = (idx.unsqueeze(-1) * factor.size + index_map(factor, perm)).flatten()
        return idx.reshape(-1)
    maps, offset = [], 0
    for part in layout.parts:
        maps.append(index_map(part, perm) + offset)
        offset += part.size
    return torch.cat(maps)


def unit_ids(layout: Layout, group: str) -> torch.Tensor:
    """For each position of a dimension laid out as `layout`, the index of `group`'s unit
    there, or -1 where the position holds none of its units (another segment)."""
    if isinstance(layout, Leaf):
        if layout.group == group:
            return torch.arange(layout.size)
        return torch.full((layout.size,), -1, dtype=torch.long)
    if isinstance(layout, Product):
        ids = torch.full((), -1, dtype=torch.long)
        for factor in layout.factors:
            ids = torch.maximum(ids.unsqueeze(-1), unit_ids(factor, group)).flatten()
        return ids.reshape(-1)
    return torch.cat([unit_ids(part, group) for part in layout.parts])


def layout_to_dict(layout: Layout) -> dict[str, Any]:
    if isinstance(layout, Leaf):
        return {"leaf": layout.size, "group": layout.group}
    if isinstance(layout, Product):
        return {"product": [layout_to_dict(f) for f in layout.factors]}
    return {"sum": [layout_to_dict(p) for p in layout.parts]}


def layout_from_dict(d: dict[str, Any]) -> Layout:
    if "leaf" in d:
        return Leaf(int(d["leaf"]), d["group"])
    if "product" in d:
        return Product(tuple(layout_from_dict(f) for f in d["product"]))
    return Sum(tuple(layout_from_dict(p) for p in d["sum"]))
