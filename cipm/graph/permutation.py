"""`Permutation`: one permutation per group of a symmetry graph."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from cipm.errors import PermutationError
from cipm.graph.layout import index_map
from cipm.graph.parts import PermGroup

if TYPE_CHECKING:
    from cipm.graph.symmetry import SymmetryGraph

__all__ = ["Permutation"]


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
        groups = getattr(graph, "groups", None)  # a SymmetryGraph's (which imports this module)
        if not isinstance(groups, tuple) or not all(isinstance(g, PermGroup) for g in groups):
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
            raise KeyError(f"no group '{group}' in this permutation") from None

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
