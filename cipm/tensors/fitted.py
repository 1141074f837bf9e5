"""A model's tensors that a symmetry graph's groups live in, read and checked against it once,
at a verb's boundary; everything inside takes the tensors."""

from __future__ import annotations

import hashlib

import torch

from cipm.errors import PermutationError
from cipm.graph.parts import TensorAxis
from cipm.graph.symmetry import SymmetryGraph

__all__ = ["fitted_tensors", "structure", "tensor_at"]


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
