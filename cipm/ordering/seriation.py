"""`cipm.reorganize`: every group's correlated units made contiguous.

Reorganization is seriation of each group's |correlation| matrix: ``"spectral"`` orders units
by the Fiedler vector of the correlation graph's normalized Laplacian (Atkins et al., 1998),
``"olo"`` by average-linkage clustering with optimal leaf ordering (Bar-Joseph et al., 2001,
scipy). `diagonality` scores the result: 0 for a random order, towards 1 the closer strong
correlations sit to the diagonal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation
from cipm.ordering.methods import reorganize_method
from cipm.ordering.problem import order_problem
from cipm.statistics.group import Statistics

__all__ = ["Seriation", "diagonality", "reorganize", "seriate"]

Seriation = Literal["auto", "spectral", "olo"]
# "auto" uses optimal leaf ordering up to this many units (its cost grows with the cube)
OLO_UNITS = 1024


def reorganize(
    model: torch.nn.Module,
    stats: Statistics,
    *,
    method: Any = "auto",
    groups: Iterable[str] | None = None,
) -> Permutation:
    """A permutation that makes every group's correlated units contiguous.

    Args:
        model: the model `stats` were collected on (not changed; apply the result with
            `cipm.permute`).
        stats: `cipm.collect` statistics of `model`.
        method: a name from `cipm.ordering.reorganize_methods()`, or such a method. Built
            in: ``"olo"`` (optimal leaf ordering of average-linkage clusters; cubic in the
            group size), ``"spectral"`` (Fiedler vector; fast at any size, but one vector
            separates two clusters best), ``"auto"``: olo up to 1024 units, else spectral,
            and ``"learned"``: the order of the pretrained meta-analysis network's scores
            (trained with the correlation objective, it seriates in O(n log n) once the
            graph is read; another network: ``method=meta.seriation``).
        groups: names of the groups to reorder (default: all; the others keep their order).
    """
    if not isinstance(stats, Statistics):
        raise CipmError(f"expected cipm.collect statistics, got {type(stats).__name__}")
    chosen = reorganize_method(method, stats.graph)
    problem = order_problem(model, None, stats, groups)
    order = chosen(problem)
    return Permutation(
        stats.graph, {g.name: order.get(g.name, torch.arange(g.size)) for g in stats.graph}
    )


def seriate(corr: torch.Tensor, method: Seriation = "auto") -> torch.Tensor:
    """An order of the units (indices) that puts strongly correlated ones next to each other."""
    a = corr.abs().to(torch.float64).fill_diagonal_(0.0)
    n = a.shape[0]
    if method == "auto":
        method = "olo" if n <= OLO_UNITS else "spectral"
    if method == "olo":
        from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
        from scipy.spatial.distance import squareform

        distance = squareform((1.0 - a).fill_diagonal_(0.0).clamp_min(0.0).numpy(), checks=False)
        tree = linkage(distance, method="average")
        return torch.from_numpy(leaves_list(optimal_leaf_ordering(tree, distance)).astype(np.int64))
    if method != "spectral":
        raise CipmError(f"seriation method must be 'auto', 'spectral' or 'olo', not {method!r}")
    degree = a.sum(1)
    scale = torch.where(degree > 0, degree.rsqrt(), torch.zeros_like(degree))
    laplacian = torch.eye(n, dtype=torch.float64) - scale[:, None] * a * scale[None, :]
    _, vectors = torch.linalg.eigh(laplacian)
    fiedler = vectors[:, 1] * scale if n > 2 else torch.arange(n, dtype=torch.float64)
    if float((fiedler * torch.arange(n, dtype=torch.float64)).sum()) < 0:  # sign: stable order
        fiedler = -fiedler
    return torch.sort(fiedler, stable=True).indices


def diagonality(corr: torch.Tensor, order: torch.Tensor | None = None) -> float:
    """How close to the diagonal the |correlation| mass lies in `order` (default: as is):
    ``1 - E|i - j| / ((n + 1) / 3)`` with pairs weighted by |corr|; 0 for a random order."""
    a = corr.abs().to(torch.float64)
    if order is not None:
        a = a[order][:, order]
    a = a.fill_diagonal_(0.0)
    n = a.shape[0]
    total = float(a.sum())
    if n < 3 or total == 0.0:
        return 0.0
    idx = torch.arange(n, dtype=torch.float64)
    distance = (idx[:, None] - idx[None, :]).abs()
    return 1.0 - float((a * distance).sum()) / total / ((n + 1) / 3)
