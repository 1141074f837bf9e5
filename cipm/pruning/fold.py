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

from cipm.graph.layout import Layout, unit_ids
from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.choose import explaining
from cipm.tensors.units import map_units, select

__all__ = ["GroupPlan", "fold_plan", "pruned_state", "selection_plan"]

# ridge of the least-squares fold, relative to the kept units' mean second moment: next to
# nothing when the samples determine the fold, a shrinkage when they don't (fewer than 2k)
RIDGE, RIDGE_FEW_SAMPLES = 1e-12, 1e-2


@dataclass(frozen=True)
class GroupPlan:
    """How one group is pruned: the kept units, in their original order (the tensors that
    make the units keep these slices), and where the removed units are folded into the kept
    ones, the (k, n) map for the tensors that consume them (None: they keep the same
    slices)."""

    keep: torch.Tensor
    fold: torch.Tensor | None = None

    def consume(self, n: int) -> torch.Tensor:
        """The (k, n) map of the consuming side: the fold, or rows of the identity."""
        return torch.eye(n, dtype=torch.float64)[self.keep] if self.fold is None else self.fold


def selection_plan(keep: torch.Tensor) -> GroupPlan:
    """Keep the units `keep` on both sides (no fold)."""
    return GroupPlan(keep)


def fold_plan(
    own: torch.Tensor,
    target: torch.Tensor,
    out_norm: torch.Tensor,
    k: int,
    samples: int,
    keep: torch.Tensor | None = None,
) -> GroupPlan:
    """Keep the k units that explain the others best (`explaining`; or the units `keep`,
    chosen otherwise, in ascending order), then fold: consumers
    get ``M = target[:, K] (own[K, K] + ridge)^-1``, the least-squares prediction of the
    target units (E[z z'^T], z the original's, z' the model being pruned) from the kept
    ones. When target is own (one-shot), kept units stay exactly themselves."""
    if keep is None:
        keep = explaining(own, out_norm, k)
    kk = own[keep][:, keep]
    relative = RIDGE if samples >= 2 * k else RIDGE_FEW_SAMPLES
    ridge = relative * float(kk.diagonal().mean()) + 1e-300
    eye = torch.eye(k, dtype=torch.float64)
    fold = torch.linalg.solve(kk + ridge * eye, target[:, keep].T).T  # (n, k)
    if target is own:
        fold[keep] = eye
    return GroupPlan(keep, fold.T.contiguous())


def pruned_state(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, plans: Mapping[str, GroupPlan]
) -> dict[str, torch.Tensor]:
    """The tensors the plans touch, each mapped along every pruned group's axis."""
    consumes = {(m.key, m.dim): m.consumes for g in graph for m in g.members}
    out: dict[str, torch.Tensor] = {}
    for key, axes in graph.by_key.items():
        kept: dict[int, torch.Tensor] = {}  # dims that keep slices: selected in one gather
        folded = []
        for axis in axes:
            pruned = [g for g in dict.fromkeys(axis.groups()) if g in plans]
            if not pruned:
                continue
            folds = any(plans[g].fold is not None for g in pruned)
            if folds and consumes.get((key, axis.dim), False):
                folded.append((axis, {g: plans[g].consume(graph[g].size) for g in pruned}))
            else:
                kept[axis.dim] = _kept_positions(axis.layout, pruned, plans)
        if not kept and not folded:
            continue
        t = select(tensors[key], kept) if kept else tensors[key]
        for axis, maps in folded:  # other dims than those selected: layouts as they were
            t = map_units(t.to(torch.float64), axis.dim, axis.layout, maps).to(t.dtype)
        out[key] = t
    return out


def _kept_positions(
    layout: Layout, groups: list[str], plans: Mapping[str, GroupPlan]
) -> torch.Tensor:
    """Positions of a dimension laid out as `layout` that hold only kept units (a plan's
    kept units are in their original order, so selection by position is its produce map)."""
    keep = torch.ones(layout.size, dtype=torch.bool)
    for g in groups:
        ids = unit_ids(layout, g)
        keep &= (ids < 0) | torch.isin(ids, plans[g].keep)
    return keep.nonzero().flatten()
