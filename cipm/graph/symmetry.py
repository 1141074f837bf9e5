"""The symmetry graph: a model's permutation groups and where each one lives.

All data here is frozen. A `Layout` describes one tensor dimension as a tree: a `Leaf` of one
group (or of no group: a fixed or trivial axis), a `Product` of factors (outer to inner, e.g.
heads x head_dim) or a `Sum` of segments (e.g. q|k|v). Permuting a group permutes every leaf of
it in every layout, which is what makes the permutation co-inverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from math import prod
from typing import TYPE_CHECKING, Any, Union

from cipm.errors import CipmError

if TYPE_CHECKING:
    from cipm.graph.permutation import Permutation

__all__ = [
    "GroupKind",
    "Leaf",
    "Member",
    "OutputAxis",
    "PermGroup",
    "Product",
    "Site",
    "Sum",
    "SymmetryGraph",
    "TensorAxis",
    "groups_in",
    "placements",
]


class GroupKind(str, Enum):
    """What the units of a group are."""

    HEADS = "heads"
    WITHIN_HEAD = "within_head"
    RESIDUAL = "residual"
    CHANNELS = "channels"
    HIDDEN = "hidden"
    OTHER = "other"

    @classmethod
    def from_tags(cls, tags: frozenset[str]) -> GroupKind:
        """Kind from the rules' tags: heads and within-head first; a residual stream is
        units made by two or more layers ('made:' tags) and added together ('sum'); else
        what the producing layer says (channels, hidden)."""
        for kind in (cls.HEADS, cls.WITHIN_HEAD):
            if kind.value in tags:
                return kind
        if "sum" in tags and sum(t.startswith("made:") for t in tags) >= 2:
            return cls.RESIDUAL
        for kind in (cls.CHANNELS, cls.HIDDEN):
            if kind.value in tags:
                return kind
        return cls.OTHER


@dataclass(frozen=True)
class Leaf:
    """Units of one group (`group` is None for an axis no permutation touches)."""

    size: int
    group: str | None = None


@dataclass(frozen=True)
class Product:
    """A dimension that is the product of its factors, outer to inner (row-major)."""

    factors: tuple[Layout, ...]

    @property
    def size(self) -> int:
        return prod(f.size for f in self.factors)


@dataclass(frozen=True)
class Sum:
    """A dimension that is its segments laid end to end."""

    parts: tuple[Layout, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


Layout = Union[Leaf, Product, Sum]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class TensorAxis:
    """One dimension of a parameter or buffer, and how groups lay out inside it."""

    key: str
    dim: int
    layout: Layout

    def groups(self) -> list[str]:
        return groups_in(self.layout)


@dataclass(frozen=True)
class OutputAxis:
    """A dimension of the model's `index`-th output that groups reach (outputs="free")."""

    index: int
    dim: int
    layout: Layout


@dataclass(frozen=True)
class Member:
    """A place a group's units appear in the model state: tensor `key`, dimension `dim`.

    `unit` is the span of one unit inside that dimension (head_dim for heads, 1 otherwise).
    `consumes` is True where an op sums over the units along this dim (a layer's input
    axis: the co-inverse side); False where the tensor makes or scales them (a layer's output
    axis, its bias, a norm's affine parameters, running statistics, an embedding's columns).
    """

    key: str
    dim: int
    unit: int = 1
    consumes: bool = False


@dataclass(frozen=True)
class Site:
    """An activation where a group's units are observable: graph node, module path, dim.

    `layout` is None when the dim holds exactly the group's units; otherwise it is the dim's
    layout tree (the group is a factor or segment of it, e.g. heads inside heads x head_dim).
    """

    node: str
    module: str
    op: str
    dim: int
    layout: Layout | None = None
    # samples per unit the activation held when traced (0: not known); they rank a group's
    # sites, which is all they are for, so they stay out of equality (`resized` keeps them)
    samples: int = field(default=0, compare=False)


@dataclass(frozen=True)
class PermGroup:
    """One permutation group: units that must be permuted together, everywhere at once."""

    name: str
    size: int
    kind: GroupKind
    members: tuple[Member, ...]
    sites: tuple[Site, ...] = ()
    within: str | None = None  # the group this one is nested in (within-head: its heads)

    def __post_init__(self) -> None:
        if self.size < 2:
            raise CipmError(f"group '{self.name}' has size {self.size}; a group needs >= 2 units")
        if not self.members:
            raise CipmError(f"group '{self.name}' has no member axes")

    @property
    def unit(self) -> int:
        """Span of one unit (head_dim for attention heads, 1 for plain units)."""
        return max(m.unit for m in self.members)


@dataclass(frozen=True)
class SymmetryGraph:
    """The permutation groups of a model, found by `cipm.trace`."""

    model: str
    groups: tuple[PermGroup, ...]
    axes: tuple[TensorAxis, ...]
    outputs: tuple[OutputAxis, ...] = ()
    _by_name: dict[str, PermGroup] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise CipmError(f"duplicate group names in symmetry graph: {names}")
        object.__setattr__(self, "_by_name", {g.name: g for g in self.groups})
        for axis in self.axes:
            unknown = [g for g in axis.groups() if g not in self._by_name]
            if unknown:
                raise CipmError(f"axis {axis.key}:{axis.dim} names unknown groups {unknown}")

    def __getitem__(self, name: str) -> PermGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no group '{name}'; groups are {list(self._by_name)}") from None

    def __iter__(self) -> Iterator[PermGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __str__(self) -> str:
        from cipm.graph.display import graph_table

        return graph_table(self)

    def layout(self, key: str, dim: int) -> Layout:
        """Layout of one parameter/buffer dimension that a group lives in."""
        for axis in self.axes:
            if axis.key == key and axis.dim == dim:
                return axis.layout
        raise KeyError(f"no group lives in {key}:{dim}")

    def by_kind(self, kind: GroupKind | str) -> list[PermGroup]:
        return [g for g in self.groups if g.kind == GroupKind(kind)]

    def random_permutation(self, seed: int | None = None) -> Permutation:
        from cipm.graph.permutation import Permutation

        return Permutation.random(self, seed=seed)

    def identity(self) -> Permutation:
        from cipm.graph.permutation import Permutation

        return Permutation.identity(self)

    def resized(self, sizes: Mapping[str, int]) -> SymmetryGraph:
        """The symmetry graph of this model with some groups cut to `sizes` units (a pruned
        model): same groups, members and sites, new sizes; a group left with one unit is no
        longer a group."""
        for name, k in sizes.items():
            if not 1 <= k <= self[name].size:
                raise CipmError(f"group '{name}' cannot have {k} units (it has {self[name].size})")
        gone = {name for name, k in sizes.items() if k < 2}

        def cut(layout: Layout) -> Layout:
            if isinstance(layout, Leaf):
                if layout.group is None or layout.group not in sizes:
                    return layout
                return Leaf(sizes[layout.group], None if layout.group in gone else layout.group)
            if isinstance(layout, Product):
                return Product(tuple(cut(f) for f in layout.factors))
            return Sum(tuple(cut(p) for p in layout.parts))

        axes = tuple(TensorAxis(a.key, a.dim, cut(a.layout)) for a in self.axes)
        units = {(a.key, a.dim, g): unit for a in axes for g, unit, _ in placements(a.layout)}
        groups = tuple(
            replace(
                g,
                size=sizes.get(g.name, g.size),
                members=tuple(replace(m, unit=units[(m.key, m.dim, g.name)]) for m in g.members),
                sites=tuple(replace(s, layout=s.layout and cut(s.layout)) for s in g.sites),
                within=None if g.within in gone else g.within,
            )
            for g in self.groups
            if g.name not in gone
        )
        outputs = tuple(replace(o, layout=cut(o.layout)) for o in self.outputs)
        return SymmetryGraph(
            self.model,
            groups,
            tuple(a for a in axes if a.groups()),
            tuple(o for o in outputs if groups_in(o.layout)),
        )

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "groups": [_group_to_dict(g) for g in self.groups],
            "axes": [
                {"key": a.key, "dim": a.dim, "layout": _layout_to_dict(a.layout)} for a in self.axes
            ],
            "outputs": [
                {"index": o.index, "dim": o.dim, "layout": _layout_to_dict(o.layout)}
                for o in self.outputs
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymmetryGraph:
        try:
            return cls(
                model=data["model"],
                groups=tuple(_group_from_dict(g) for g in data["groups"]),
                axes=tuple(
                    TensorAxis(a["key"], a["dim"], _layout_from_dict(a["layout"]))
                    for a in data["axes"]
                ),
                outputs=tuple(
                    OutputAxis(o["index"], o["dim"], _layout_from_dict(o["layout"]))
                    for o in data.get("outputs", [])
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CipmError(f"not a cipm symmetry graph: {e!r}") from e

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> SymmetryGraph:
        return cls.from_dict(json.loads(text))


def groups_in(layout: Layout) -> list[str]:
    """Groups of every leaf in a layout, in order (a group may repeat: rotary halves)."""
    if isinstance(layout, Leaf):
        return [layout.group] if layout.group else []
    children = layout.factors if isinstance(layout, Product) else layout.parts
    return [g for c in children for g in groups_in(c)]


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


def _layout_to_dict(layout: Layout) -> dict[str, Any]:
    if isinstance(layout, Leaf):
        return {"leaf": layout.size, "group": layout.group}
    if isinstance(layout, Product):
        return {"product": [_layout_to_dict(f) for f in layout.factors]}
    return {"sum": [_layout_to_dict(p) for p in layout.parts]}


def _layout_from_dict(d: dict[str, Any]) -> Layout:
    if "leaf" in d:
        return Leaf(int(d["leaf"]), d["group"])
    if "product" in d:
        return Product(tuple(_layout_from_dict(f) for f in d["product"]))
    return Sum(tuple(_layout_from_dict(p) for p in d["sum"]))


def _group_to_dict(g: PermGroup) -> dict[str, Any]:
    return {
        "name": g.name,
        "size": g.size,
        "kind": g.kind.value,
        "within": g.within,
        "members": [[m.key, m.dim, m.unit, m.consumes] for m in g.members],
        "sites": [
            [
                s.node,
                s.module,
                s.op,
                s.dim,
                _layout_to_dict(s.layout) if s.layout else None,
                s.samples,
            ]
            for s in g.sites
        ],
    }


def _site_from_list(entry: list[Any]) -> Site:
    node, module, op, dim, layout, *rest = entry  # graphs written before `samples` lack it
    lay = _layout_from_dict(layout) if layout else None
    return Site(node, module, op, int(dim), lay, int(rest[0]) if rest else 0)


def _group_from_dict(d: dict[str, Any]) -> PermGroup:
    return PermGroup(
        name=d["name"],
        size=int(d["size"]),
        kind=GroupKind(d["kind"]),
        members=tuple(Member(k, int(dim), int(u), bool(c)) for k, dim, u, c in d["members"]),
        sites=tuple(_site_from_list(entry) for entry in d["sites"]),
        within=d.get("within"),
    )
