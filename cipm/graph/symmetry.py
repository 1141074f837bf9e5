"""The symmetry graph: a model's permutation groups and where each one lives.

All data here is frozen. Each tensor dimension a group lives in has a `Layout` (see
`cipm.graph.layout`); permuting a group permutes every leaf of it in every layout, which is
what makes the permutation co-inverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from cipm.errors import CipmError
from cipm.graph.layout import Layout, Leaf, groups_in, leaves, placements, relabel
from cipm.graph.parts import GroupKind, Member, OutputAxis, PermGroup, Site, TensorAxis
from cipm.graph.permutation import Permutation
from cipm.graph.serialize import graph_fields, graph_to_dict

__all__ = ["GroupKind", "Member", "OutputAxis", "PermGroup", "Site", "SymmetryGraph", "TensorAxis"]


@dataclass(frozen=True)
class SymmetryGraph:
    """The permutation groups of a model, found by `cipm.trace`."""

    model: str
    groups: tuple[PermGroup, ...]
    axes: tuple[TensorAxis, ...]
    outputs: tuple[OutputAxis, ...] = ()
    # plugins left out when the graph was traced; every hook cipm calls for this graph's
    # model (resizing, statistics resets, alignment methods) leaves them out too
    blocked_plugins: tuple[str, ...] = ()
    # digest of the traced model's module tree (see `cipm.tensors.modify.structure`), so a
    # model wired otherwise is not silently permuted by this graph; "" (unknown) skips it
    structure: str = ""
    # what the model was traced on (not saved in JSON): `cipm.prune` checks its result there
    example_inputs: Any = field(default=None, repr=False, compare=False)
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
            for leaf in leaves(axis.layout):
                if leaf.group is not None and leaf.size != self._by_name[leaf.group].size:
                    raise CipmError(
                        f"axis {axis.key}:{axis.dim} holds {leaf.size} units of group "
                        f"'{leaf.group}', which has {self._by_name[leaf.group].size}"
                    )

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
        return _table(self)

    @cached_property
    def by_key(self) -> Mapping[str, tuple[TensorAxis, ...]]:
        """The axes groups live in, by tensor name (tensors and their axes in graph order)."""
        index: dict[str, list[TensorAxis]] = {}
        for axis in self.axes:
            index.setdefault(axis.key, []).append(axis)
        return {key: tuple(axes) for key, axes in index.items()}

    def layout(self, key: str, dim: int) -> Layout:
        """Layout of one parameter/buffer dimension that a group lives in."""
        for axis in self.by_key.get(key, ()):
            if axis.dim == dim:
                return axis.layout
        raise KeyError(f"no group lives in {key}:{dim}")

    def by_kind(self, kind: GroupKind | str) -> list[PermGroup]:
        return [g for g in self.groups if g.kind == GroupKind(kind)]

    def random_permutation(self, seed: int | None = None) -> Permutation:
        return Permutation.random(self, seed=seed)

    def identity(self) -> Permutation:
        return Permutation.identity(self)

    def resized(self, sizes: Mapping[str, int]) -> SymmetryGraph:
        """The symmetry graph of this model with some groups cut to `sizes` units (a pruned
        model): same groups, members and sites, new sizes; a group left with one unit is no
        longer a group."""
        for name, k in sizes.items():
            if not 1 <= k <= self[name].size:
                raise CipmError(f"group '{name}' cannot have {k} units (it has {self[name].size})")
        gone = {name for name, k in sizes.items() if k < 2}

        def leaf(leaf: Leaf) -> Leaf:
            if leaf.group is None or leaf.group not in sizes:
                return leaf
            return Leaf(sizes[leaf.group], None if leaf.group in gone else leaf.group)

        def cut(layout: Layout) -> Layout:
            return relabel(layout, leaf)

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
            self.blocked_plugins,
            self.structure,
            self.example_inputs,
        )

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymmetryGraph:
        return cls(**graph_fields(data))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> SymmetryGraph:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise CipmError(f"not a cipm symmetry graph: the text is not JSON ({e})") from None
        if not isinstance(data, dict):
            raise CipmError(f"not a cipm symmetry graph: JSON {type(data).__name__}, not an object")
        return cls.from_dict(data)


def _table(graph: SymmetryGraph, max_members: int = 3) -> str:
    """One row per group: name, kind, size (x unit span), nesting, member axes."""
    rows = [("group", "kind", "size", "within", "members")]
    for g in graph.groups:
        size = f"{g.size}" + (f" x {g.unit}" if g.kind.value == "heads" else "")
        shown = ", ".join(f"{m.key}:{m.dim}" for m in g.members[:max_members])
        more = len(g.members) - max_members
        rows.append(
            (g.name, g.kind.value, size, g.within or "", shown + (f" +{more}" if more > 0 else ""))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    lines.insert(1, "-" * max(len(ln) for ln in lines))
    kinds: dict[str, int] = {}
    for g in graph.groups:
        kinds[g.kind.value] = kinds.get(g.kind.value, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    header = f"SymmetryGraph of {graph.model}: {len(graph.groups)} groups ({summary})"
    return "\n".join([header, *lines])
