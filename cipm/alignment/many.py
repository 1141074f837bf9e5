"""`cipm.align_many` (MergeMany): one unit order for many models."""

from __future__ import annotations

import torch

from cipm.alignment.methods import checked_state
from cipm.alignment.weight import weight_matching
from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.tensors.modify import permute_state

__all__ = ["align_many"]


def align_many(
    models: list[torch.nn.Module],
    graph: SymmetryGraph,
    *,
    seed: int = 0,
    max_rounds: int = 50,
) -> list[Permutation]:
    """MergeMany: one permutation per model that brings all of them into one unit order.

    Each model in turn is weight-matched to the mean of the others (as currently
    permuted), until a round changes nothing. The common order is model 0's: its
    permutation is the identity.

    Raises:
        CipmError: fewer than two models, or a model that does not fit the graph.
    """
    if len(models) < 2:
        raise CipmError(f"align_many needs at least two models, got {len(models)}")
    states = [checked_state(m, graph, f"models[{i}]") for i, m in enumerate(models)]
    perms = [graph.identity() for _ in models]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_rounds):
        changed = False
        for i in torch.randperm(len(models), generator=gen).tolist():
            others = [
                permute_state(state, perm)
                for j, (state, perm) in enumerate(zip(states, perms, strict=True))
                if j != i
            ]
            mean = {k: torch.stack([o[k].double() for o in others]).mean(0) for k in others[0]}
            new = weight_matching(mean, states[i], graph, seed=seed)
            if new != perms[i]:
                perms[i], changed = new, True
        if not changed:
            break
    to_first = perms[0].inverse()
    return [p.compose(to_first) for p in perms]
