"""Modifiers: apply a permutation to a model, returning a new model with the same function."""

from __future__ import annotations

import hashlib

import torch

from cipm.errors import PermutationError
from cipm.graph.layout import index_map
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import SymmetryGraph, TensorAxis
from cipm.tensors.resize import with_tensors
from cipm.tensors.units import select

__all__ = ["fitted_tensors", "permute", "permute_state", "structure", "tensor_at"]


def permute(model: torch.nn.Module, perm: Permutation) -> torch.nn.Module:
    """A copy of `model` with every group permuted by `perm`; `model` is not changed.

    Every parameter and buffer axis of a group is indexed with the group's permutation (the
    co-inverse of the producer's permutation sits on the consumer's input axis), so the new
    model computes the same function.

    Raises:
        PermutationError: `perm` is not a `Permutation`, or the model does not have the
            tensors or sizes the permutation's symmetry graph describes (naming the group), or
            its modules are not those the graph was traced from.
    """
    if not isinstance(perm, Permutation):
        raise PermutationError(
            "cipm.permute needs a cipm.Permutation (graph.random_permutation(), cipm.align(), "
            f"cipm.Permutation(graph, indices)), got {type(perm).__name__}"
        )
    tensors = fitted_tensors(model, perm.graph)
    return with_tensors(model, permute_state(tensors, perm), perm.graph.blocked_plugins)


def permute_state(state: dict[str, torch.Tensor], perm: Permutation) -> dict[str, torch.Tensor]:
    """Permuted copies of the state tensors that `perm`'s groups touch (others are omitted)."""
    out: dict[str, torch.Tensor] = {}
    for key, axes in perm.graph.by_key.items():
        out[key] = select(state[key], {a.dim: index_map(a.layout, perm) for a in axes})
    return out


def fitted_tensors(
    model: torch.nn.Module, graph: SymmetryGraph, which: str = "model"
) -> dict[str, torch.Tensor]:
    """The model's tensors that `graph`'s groups live in, checked against the graph.

    Args:
        which: what the caller calls the model, for the message (``"model_b"``, ``"models[2]"``).

    Raises:
        PermutationError: the model's modules are not those the graph was traced from, or a
            tensor is missing or has another size (naming the group).
    """
    if not isinstance(model, torch.nn.Module):
        raise PermutationError(f"{which} must be a torch.nn.Module, got {type(model).__name__}")
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
    if graph.structure and structure(model) != graph.structure:
        raise PermutationError(
            f"{which} is not wired like the model the symmetry graph was traced from "
            f"({graph.model}): its modules or tensor names differ. Trace this model and use "
            "its own graph."
        )
    return tensors


def _mismatch(which: str, graph: SymmetryGraph, axis: TensorAxis, what: str) -> str:
    groups = ", ".join(f"'{g}'" for g in dict.fromkeys(axis.groups()))
    return (
        f"{which} does not fit the symmetry graph of {graph.model}: '{axis.key}' {what} "
        f"(group {groups}). Trace this model and use its own graph."
    )


def structure(model: torch.nn.Module) -> str:
    """A digest of how a model is put together, as far as its modules tell: every
    submodule's path and class, every parameter's and buffer's name (not their sizes, which
    pruning changes, nor values)."""
    digest = hashlib.sha256()
    for path, module in model.named_modules(remove_duplicate=False):
        cls = type(module)
        digest.update(f"{path}={cls.__module__}.{cls.__qualname__};".encode())
    for key, _ in model.named_parameters(remove_duplicate=False):
        digest.update(f"p:{key};".encode())
    for key, _ in model.named_buffers(remove_duplicate=False):
        digest.update(f"b:{key};".encode())
    return digest.hexdigest()[:16]


def tensor_at(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer of `model` named `key` (raises AttributeError if none)."""
    module_path, _, name = key.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    t = getattr(module, name)
    if not isinstance(t, torch.Tensor):
        raise AttributeError(key)
    return t
