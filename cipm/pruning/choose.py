"""Which units a group keeps: by weight magnitude, by activation, or the subset that explains
the others best by least squares (which the merge fold then folds the rest into)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch

from cipm.errors import CipmWarning
from cipm.graph.parts import PermGroup
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.moments import Moments
from cipm.tensors.features import weight_norms

__all__ = ["explaining", "magnitude", "second_moment", "top", "warn_if_few"]


def top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order (ties: lower index)."""
    order = torch.sort(score, descending=True, stable=True).indices
    return order[:k].sort().values


def magnitude(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, group: PermGroup
) -> torch.Tensor:
    """||in|| * ||out|| per unit over all member tensors (making side, consuming side)."""
    made, used = weight_norms(tensors, graph, group)
    return made * (used if bool(used.any()) else 1.0)


def second_moment(m: Moments) -> torch.Tensor:
    """E[z z^T] of units (uncentered: a consumer sees the means too)."""
    return m.comoment / m.count + torch.outer(m.mean, m.mean)


def explaining(second: torch.Tensor, out_norm: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy least-squares subset: a pivoted Cholesky of the second moments weighted by
    the units' outgoing norms keeps, one at a time, the unit whose part not explained by the
    kept ones reaches the consumers most strongly. Once the rest is explained (fewer
    samples than units), the remaining picks go by weighted energy."""
    n = second.shape[0]
    weight = torch.where(out_norm > 0, out_norm, torch.ones_like(out_norm))
    g = second * torch.outer(weight, weight)
    energy = g.diagonal().clone()
    residual = energy.clone()
    factors = torch.zeros(n, k, dtype=torch.float64)
    chosen = torch.zeros(n, dtype=torch.bool)
    tiny = 1e-10 * float(energy.max().clamp_min(1e-300))
    for j in range(k):
        scores = torch.where(chosen, -1.0, residual)
        if float(scores.max()) <= tiny:  # explained: fill by energy
            scores = torch.where(chosen, -1.0, energy)
            rest = torch.sort(scores, descending=True, stable=True).indices[: k - j]
            chosen[rest] = True
            break
        i = int(torch.argmax(scores))
        chosen[i] = True
        column = (g[:, i] - factors[:, :j] @ factors[i, :j]) / float(residual[i]) ** 0.5
        factors[:, j] = column
        residual = (residual - column.square()).clamp_min(0.0)
    return torch.nonzero(chosen).flatten()


def warn_if_few(samples: int, k: int, group: str) -> None:
    if samples < k:
        warnings.warn(
            f"group '{group}': {samples} samples for {k} kept units; the least-squares fold "
            "is underdetermined (ridge-regularized). Collect more data for a better merge.",
            CipmWarning,
            stacklevel=4,
        )
