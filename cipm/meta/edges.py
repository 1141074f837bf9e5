"""The edges of the meta-network's input graph, chosen so that permuting the units permutes
the graph: each unit's top-k |correlation| neighbours (`top_k_edges`, ties with the k-th
kept, zero edges dropped) and the weights between groups (`weight_links`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch

from cipm.errors import CipmError
from cipm.graph.layout import Leaf
from cipm.graph.symmetry import SymmetryGraph

__all__ = ["top_k_edges", "weight_links"]


def weight_links(
    graph: SymmetryGraph, tensors: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """For each weight whose rows (dim 0) are one group's units and whose columns (dim 1)
    another's: the two groups and the (out, in) float64 magnitudes, |w| summed over kernel
    positions. Heads and other nested layouts are linked through their own groups."""
    layouts = {(a.key, a.dim): a.layout for a in graph.axes}
    for (key, dim), out_layout in layouts.items():
        in_layout = layouts.get((key, 1))
        if dim != 0 or not (isinstance(out_layout, Leaf) and isinstance(in_layout, Leaf)):
            continue
        if out_layout.group is None or in_layout.group is None or key not in tensors:
            continue
        w = tensors[key].detach().abs().to(torch.float64)
        yield out_layout.group, in_layout.group, w.reshape(w.shape[0], w.shape[1], -1).sum(-1)


def top_k_edges(
    scores: torch.Tensor, k: int, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges (2, edges) from each row to its k columns of largest |score|, plus every column
    tied with the k-th, none of zero score; the attribute (edges,) is the score.

    The same edges for any order of rows and columns: |scores| are rounded to a grid 40 bits
    below the largest (values equal but for float rounding are equal), every column tied
    with the k-th is kept, and zero scores are never edges (a dead unit's all-zero
    correlations must not pick neighbours by position). So a row has at most k edges unless
    scores tie, and none if all its scores are zero.
    """
    if k < 1:
        raise CipmError(f"k must be at least 1, got {k}")
    cols = scores.shape[1]
    top = float(scores.abs().max()) if scores.numel() else 0.0
    kk = min(k, cols - 1 if exclude_self else cols)
    if top == 0.0 or kk < 1:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=scores.dtype)
    grid = torch.round(torch.ldexp(scores.abs(), torch.tensor(40 - math.frexp(top)[1])))
    if exclude_self:
        grid.fill_diagonal_(-1.0)
    kth = grid.topk(kk, dim=1).values[:, -1:]
    index = torch.nonzero((grid >= kth) & (grid > 0)).T
    return index, scores[index[0], index[1]]
