"""Modifiers: apply a permutation to a model, returning a new model with the same function."""

from __future__ import annotations

import torch

from cipm.errors import PermutationError
from cipm.graph.layout import index_map
from cipm.graph.symmetry import Permutation
from cipm.tensors.fitted import fitted_tensors
from cipm.tensors.resize import with_tensors
from cipm.tensors.units import select

__all__ = ["permute", "permute_state"]


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
