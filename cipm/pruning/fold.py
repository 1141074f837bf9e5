"""How a group loses units: the (k, n) maps for the tensors that make its units and for those
that consume them, and the model state those maps give.

Tensors that make or scale the units (a layer's output rows, its bias, norm parameters) keep
the chosen units' slices; tensors that consume them (the next layer's input columns) get
either the same selection or a least-squares fold of the removed units into the kept ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.choose import explaining
from cipm.tensors.units import map_units

__all__ = ["GroupPlan", "merge_plan", "pruned_state", "selection_plan"]

# ridge of the least-squares fold, relative to the kept units' mean second moment: next to
# nothing when the samples determine the fold, a shrinkage when they don't (fewer than 2k)
RIDGE, RIDGE_FEW_SAMPLES = 1e-12, 1e-2


@dataclass(frozen=True)
class GroupPlan:
    """How one group is pruned: the kept units (in their original order) and the (k, n)
    maps for the tensors that make the units and for those that consume them."""

    keep: torch.Tensor
    produce: torch.Tensor
    consume: torch.Tensor


def selection_plan(keep: torch.Tensor, n: int) -> GroupPlan:
    """Keep the units `keep` of `n` on both sides (no fold)."""
    select = torch.eye(n, dtype=torch.float64)[keep]
    return GroupPlan(keep, select, select)


def merge_plan(
    own: torch.Tensor, target: torch.Tensor, out_norm: torch.Tensor, k: int, samples: int
) -> GroupPlan:
    """Keep the k units that explain the others best (`explaining`), then fold: consumers
    get ``M = target[:, K] (own[K, K] + ridge)^-1``, the least-squares prediction of the
    target units (E[z z'^T], z the original's, z' the model being pruned) from the kept
    ones. When target is own (one-shot), kept units stay exactly themselves."""
    n = own.shape[0]
    keep = explaining(own, out_norm, k)
    kk = own[keep][:, keep]
    relative = RIDGE if samples >= 2 * k else RIDGE_FEW_SAMPLES
    ridge = relative * float(kk.diagonal().mean()) + 1e-300
    eye = torch.eye(k, dtype=torch.float64)
    fold = torch.linalg.solve(kk + ridge * eye, target[:, keep].T).T  # (n, k)
    if target is own:
        fold[keep] = eye
    return GroupPlan(keep, torch.eye(n, dtype=torch.float64)[keep], fold.T.contiguous())


def pruned_state(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, plans: Mapping[str, GroupPlan]
) -> dict[str, torch.Tensor]:
    """The tensors the plans touch, each mapped along every pruned group's axis."""
    consumes = {(m.key, m.dim): m.consumes for g in graph for m in g.members}
    out: dict[str, torch.Tensor] = {}
    for axis in graph.axes:
        pruned = [g for g in dict.fromkeys(axis.groups()) if g in plans]
        if not pruned:
            continue
        side = "consume" if consumes.get((axis.key, axis.dim), False) else "produce"
        maps = {g: getattr(plans[g], side) for g in pruned}
        t = out.get(axis.key, tensors[axis.key])
        out[axis.key] = map_units(t.to(torch.float64), axis.dim, axis.layout, maps).to(t.dtype)
    return out
