"""Modifiers: apply a permutation to a model, returning a new model with the same function."""

from __future__ import annotations

import copy

import torch

from cipm.errors import PermutationError
from cipm.graph.layout import index_map
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import SymmetryGraph, TensorAxis

__all__ = ["fitted_tensors", "permute", "permute_state", "tensor_at"]


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
            tensor_at(new, key).copy_(value)
    return new


def permute_state(state: dict[str, torch.Tensor], perm: Permutation) -> dict[str, torch.Tensor]:
    """Permuted copies of the state tensors that `perm`'s groups touch (others are omitted)."""
    out: dict[str, torch.Tensor] = {}
    for key, axes in perm.graph.by_key.items():
        t = state[key]
        for axis in axes:
            t = t.index_select(axis.dim, index_map(axis.layout, perm).to(t.device))
        out[key] = t
    return out


def fitted_tensors(
    model: torch.nn.Module, graph: SymmetryGraph, which: str = "model"
) -> dict[str, torch.Tensor]:
    """The model's tensors that `graph`'s groups live in, checked against the graph.

    Args:
        which: what the caller calls the model, for the message (``"model_b"``, ``"models[2]"``).

    Raises:
        PermutationError: a tensor is missing or has another size (naming the group).
    """
    tensors: dict[str, torch.Tensor] = {}
    for axis in graph.axes:
        try:
            t = tensor_at(model, axis.key)
        except AttributeError:
            raise PermutationError(
                _mismatch(which, graph, axis, "has no tensor of that name")
            ) from None
        if t.dim() <= axis.dim or t.shape[axis.dim] != axis.layout.size:
            raise PermutationError(
                _mismatch(
                    which,
                    graph,
                    axis,
                    f"has shape {tuple(t.shape)}, expected dim {axis.dim} "
                    f"of size {axis.layout.size}",
                )
            )
        tensors[axis.key] = t.detach()
    return tensors


def _mismatch(which: str, graph: SymmetryGraph, axis: TensorAxis, what: str) -> str:
    groups = ", ".join(f"'{g}'" for g in dict.fromkeys(axis.groups()))
    return (
        f"{which} does not fit the symmetry graph of {graph.model}: '{axis.key}' {what} "
        f"(group {groups}). Trace this model and use its own graph."
    )


def tensor_at(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer of `model` named `key` (raises AttributeError if none)."""
    module_path, _, name = key.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    t = getattr(module, name)
    if not isinstance(t, torch.Tensor):
        raise AttributeError(key)
    return t
