"""The symmetry graph: a model's permutation groups and where each one lives, and
`Permutation`, one permutation per group of it (the two refer to each other, so they share
a module).

All data here is frozen. Each tensor dimension a group lives in has a `Layout` (see
`cipm.graph.layout`); permuting a group permutes every leaf of it in every layout, which is
what makes the permutation co-inverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

import torch

from cipm.errors import CipmError, PermutationError, UnknownGroupError
from cipm.graph.layout import Layout, Leaf, groups_in, index_map, leaves, placements, relabel
from cipm.graph.parts import GroupKind, OutputAxis, PermGroup, TensorAxis
from cipm.graph.serialize import graph_fields, graph_to_dict
from cipm.graph.table import group_table

# the parts (GroupKind, Member, ...) are `cipm.graph.parts`'; importing them from here works too
__all__ = ["Permutation", "SymmetryGraph"]


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
            known = list(self._by_name)
            raise UnknownGroupError(f"no group {name!r}; groups are {known}") from None

    def __iter__(self) -> Iterator[PermGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __str__(self) -> str:
        return group_table(self.model, self.groups)

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
        return graph_to_dict({f.name: getattr(self, f.name) for f in fields(self) if f.init})

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


class Permutation(Mapping[str, torch.Tensor]):
    """A permutation of every group of a `SymmetryGraph`.

    ``perm[name][i] = j`` means unit ``i`` of the permuted model is unit ``j`` of the original
    (the convention of ``index_select``). Immutable; validated on construction.

    Example:
        >>> p = graph.random_permutation(seed=0)
        >>> restored = cipm.permute(cipm.permute(model, p), p.inverse())
        >>> all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items())
        True
    """

    __slots__ = ("_indices", "graph")

    def __init__(self, graph: SymmetryGraph, indices: Mapping[str, Any]) -> None:
        if not isinstance(graph, SymmetryGraph):
            raise PermutationError(
                f"a Permutation needs a SymmetryGraph, got {type(graph).__name__}"
            )
        if not isinstance(indices, Mapping):
            raise PermutationError(
                f"a Permutation needs a mapping of group name to indices, got "
                f"{type(indices).__name__}"
            )
        checked: dict[str, torch.Tensor] = {}
        extra = set(indices) - {g.name for g in graph.groups}
        if extra:
            raise PermutationError(
                f"permutation names groups this graph ({graph.model}) does not have: "
                f"{sorted(extra)}; was it made for another model?"
            )
        for group in graph.groups:
            if group.name not in indices:
                raise PermutationError(f"permutation is missing group '{group.name}'")
            idx = _indices(indices[group.name], group.name)
            if idx.shape != (group.size,):
                raise PermutationError(
                    f"permutation of group '{group.name}' has shape {tuple(idx.shape)}, "
                    f"the group has {group.size} units"
                )
            if not torch.equal(idx.sort().values, torch.arange(group.size)):
                raise PermutationError(
                    f"indices for group '{group.name}' are not a permutation of 0..{group.size - 1}"
                )
            checked[group.name] = idx
        self.graph = graph
        self._indices = MappingProxyType(checked)

    # -- constructors ----------------------------------------------------------------------
    @classmethod
    def identity(cls, graph: SymmetryGraph) -> Permutation:
        return cls(graph, {g.name: torch.arange(g.size) for g in graph.groups})

    @classmethod
    def random(cls, graph: SymmetryGraph, seed: int | None = None) -> Permutation:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise PermutationError(f"seed must be a whole number or None, got {seed!r}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return cls(graph, {g.name: torch.randperm(g.size, generator=gen) for g in graph.groups})

    # -- algebra ---------------------------------------------------------------------------
    def inverse(self) -> Permutation:
        """The co-inverse: permuting by ``p`` then ``p.inverse()`` restores the original."""
        return Permutation(self.graph, {k: torch.argsort(v) for k, v in self._indices.items()})

    def compose(self, then: Permutation) -> Permutation:
        """Permuting by ``self`` and then by ``then`` in one permutation."""
        self._same_graph(then)
        return Permutation(self.graph, {k: v[then[k]] for k, v in self._indices.items()})

    def restore_output(self, output: torch.Tensor, index: int = 0) -> torch.Tensor:
        """The `index`-th output of a model permuted by this permutation, put back in the
        original model's order (for graphs traced with ``outputs="free"``)."""
        for axis in self.graph.outputs:
            if axis.index == index:
                order = torch.argsort(index_map(axis.layout, self))
                output = output.index_select(axis.dim, order.to(output.device))
        return output

    def is_identity(self) -> bool:
        return all(torch.equal(v, torch.arange(len(v))) for v in self._indices.values())

    # -- mapping ---------------------------------------------------------------------------
    def __getitem__(self, group: str) -> torch.Tensor:
        """A copy of the group's indices (changing it cannot change the permutation)."""
        try:
            return self._indices[group].clone()
        except KeyError:
            raise UnknownGroupError(f"no group {group!r} in this permutation") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Permutation):
            return NotImplemented
        return self.graph == other.graph and all(
            torch.equal(v, other._indices[k]) for k, v in self._indices.items()
        )

    def __hash__(self) -> int:
        return hash(tuple((k, tuple(v.tolist())) for k, v in self._indices.items()))

    def __repr__(self) -> str:
        moved = sum(int((v != torch.arange(len(v))).sum()) for v in self._indices.values())
        return f"Permutation({len(self._indices)} groups, {moved} units moved)"

    def to_dict(self) -> dict[str, list[int]]:
        return {k: v.tolist() for k, v in self._indices.items()}

    def _same_graph(self, other: Permutation) -> None:
        if other.graph != self.graph:
            raise PermutationError("cannot compose permutations of different symmetry graphs")


def _indices(value: Any, group: str) -> torch.Tensor:
    """Indices as a fresh CPU long tensor; anything that is not whole numbers is an error."""
    try:
        idx = torch.as_tensor(value).detach().to("cpu").clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise PermutationError(f"indices for group '{group}' are not numbers: {e}") from None
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise PermutationError(
            f"indices for group '{group}' must be whole numbers, got {idx.dtype}"
        )
    return idx.to(torch.long)
