"""Modifiers: apply a permutation to a model, returning a new model with the same function."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

from cipm.errors import PermutationError
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import Layout, Leaf, Product, SymmetryGraph, TensorAxis

__all__ = ["fitted_tensors", "index_map", "permute", "permute_state"]


def permute(model: torch.nn.Module, perm: Permutation) -> torch.nn.Module:
    """A copy of `model` with every group permuted by `perm`; `model` is not changed.

    Every parameter and buffer axis of a group is indexed with the group's permutation (the
    co-inverse of the producer's permutation sits on the consumer's input axis), so the new
    model computes the same function.

    Raises:
        PermutationError: the model does not have the tensors or sizes the permutation's
            symmetry graph describes (naming the group).
    """
    tensors = fitted_tensors(model, perm.graph)
    permuted = permute_state(tensors, perm)
    new = copy.deepcopy(model)
    with torch.no_grad():
        for key, value in permuted.items():
            _get(new, key).copy_(value)
    return new


def permute_state(state: dict[str, torch.Tensor], perm: Permutation) -> dict[str, torch.Tensor]:
    """Permuted copies of the state tensors that `perm`'s groups touch (others are omitted)."""
    maps = {}
    for axis in perm.graph.axes:
        maps[(axis.key, axis.dim)] = index_map(axis.layout, perm)
    out: dict[str, torch.Tensor] = {}
    for (key, dim), idx in maps.items():
        out[key] = out.get(key, state[key]).index_select(dim, idx.to(state[key].device))
    return out


def index_map(layout: Layout, perm: Permutation | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Source index of every position of a dimension laid out as `layout`, under `perm`."""
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


def fitted_tensors(model: torch.nn.Module, graph: SymmetryGraph) -> dict[str, torch.Tensor]:
    """The model's tensors that `graph`'s groups live in, checked against the graph.

    Raises:
        PermutationError: a tensor is missing or has another size (naming the group).
    """
    tensors: dict[str, torch.Tensor] = {}
    for axis in graph.axes:
        try:
            t = _get(model, axis.key)
        except AttributeError:
            raise PermutationError(_mismatch(graph, axis, "has no tensor of that name")) from None
        if t.dim() <= axis.dim or t.shape[axis.dim] != axis.layout.size:
            raise PermutationError(
                _mismatch(
                    graph,
                    axis,
                    f"has shape {tuple(t.shape)}, expected dim {axis.dim} "
                    f"of size {axis.layout.size}",
                )
            )
        tensors[axis.key] = t.detach()
    return tensors


def _mismatch(graph: SymmetryGraph, axis: TensorAxis, what: str) -> str:
    groups = ", ".join(f"'{g}'" for g in dict.fromkeys(axis.groups()))
    return (
        f"model does not fit the symmetry graph of {graph.model}: '{axis.key}' {what} "
        f"(group {groups}). Trace this model and use its own graph."
    )


def _get(model: torch.nn.Module, key: str) -> torch.Tensor:
    module_path, _, name = key.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    t = getattr(module, name)
    if not isinstance(t, torch.Tensor):
        raise AttributeError(key)
    return t
