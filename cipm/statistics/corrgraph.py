"""Correlation graphs of units as `torch_geometric.data.Data`, the meta-network's input.

Node features per unit: activation mean and std, incoming and outgoing weight norms, bias.
Edges: each unit's top-k |correlation| neighbours (O(n k) edges), correlation as edge attribute;
chosen so that permuting the units permutes the graph (`top_k_edges`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch

from cipm.errors import CipmError
from cipm.graph.layout import Leaf
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics

if TYPE_CHECKING:
    from torch_geometric.data import Data


def _data(**fields: object) -> Data:
    # torch_geometric takes ~1.5 s to import: only pay for it when a graph is built
    try:
        from torch_geometric.data import Data
    except ImportError as e:
        raise CipmError("correlation graphs need torch-geometric: pip install 'cipm[meta]'") from e

    return Data(**fields)


__all__ = [
    "FEATURES",
    "bipartite_graph",
    "correlation_graph",
    "network_graph",
    "top_k_edges",
    "weight_links",
]

FEATURES = ("mean", "std", "in_norm", "out_norm", "bias")


def node_features(s: GroupStatistics) -> torch.Tensor:
    """(n, 5) float32 features, in the order of `FEATURES`."""
    f = s.features
    return torch.stack([s.mean, s.std, f.in_norm, f.out_norm, f.bias], dim=1).float()


def correlation_graph(stats: Statistics, group: str, k: int = 16) -> Data:
    """One group's units, linked to their `k` most correlated (by |corr|) other units.

    Returns:
        Data with ``x`` (n, 5), ``edge_index`` (2, edges) directed from each unit to its
        neighbours, ``edge_attr`` (edges, 1) their correlations, and ``group`` the name;
        min(k, n - 1) edges per unit, more where correlations tie with the k-th, none to
        units it does not correlate with at all (`top_k_edges`).
    """
    s = stats[group]
    edge_index, edge_attr = top_k_edges(s.corr, k, exclude_self=True)
    return _data(
        x=node_features(s),
        edge_index=edge_index,
        edge_attr=edge_attr.float().unsqueeze(1),
        group=group,
    )


def bipartite_graph(cross: CrossStatistics, group: str, k: int = 16) -> Data:
    """Model A's units (nodes 0..n-1) and model B's (n..2n-1), each linked to its `k` most
    cross-correlated units of the other model, in both directions.

    Node features: activation mean and std; ``side`` is 0 for A and 1 for B.
    """
    m = cross[group]
    n_a = m.a.mean.numel()
    corr = m.corr
    ab_index, ab_attr = top_k_edges(corr, k)
    ba_index, ba_attr = top_k_edges(corr.T, k)
    ab_index[1] += n_a
    ba_index[0] += n_a
    x = torch.cat([torch.stack([m.a.mean, m.a.std], 1), torch.stack([m.b.mean, m.b.std], 1)])
    side = torch.cat(
        [torch.zeros(n_a, dtype=torch.long), torch.ones(len(m.b.mean), dtype=torch.long)]
    )
    return _data(
        x=x.float(),
        edge_index=torch.cat([ab_index, ba_index], 1),
        edge_attr=torch.cat([ab_attr, ba_attr]).float().unsqueeze(1),
        side=side,
        group=group,
    )


def network_graph(stats: Statistics, model: torch.nn.Module, k: int = 8) -> Data:
    """Every group's units in one graph, with consecutive groups linked through weights.

    For each weight whose output axis (dim 0) is one group and input axis (dim 1) another,
    every output unit is linked from its `k` largest-magnitude input units (|w| summed over
    kernel positions); edge attribute the magnitude. Node features as `correlation_graph`,
    plus ``node_group`` (the index of each unit's group) and ``groups`` (the names).
    """
    names = list(stats)
    offsets: dict[str, int] = {}
    total = 0
    for name in names:
        offsets[name] = total
        total += stats.graph[name].size
    indices, attrs = [], []
    for out_group, in_group, magnitude in weight_links(stats.graph, model.state_dict()):
        index, attr = top_k_edges(magnitude, k)
        indices.append(torch.stack([index[1] + offsets[in_group], index[0] + offsets[out_group]]))
        attrs.append(attr.unsqueeze(1))
    return _data(
        x=torch.cat([node_features(stats[n]) for n in names]),
        edge_index=torch.cat(indices, 1) if indices else torch.zeros(2, 0, dtype=torch.long),
        edge_attr=torch.cat(attrs).float() if attrs else torch.zeros(0, 1),
        node_group=torch.cat(
            [torch.full((stats.graph[n].size,), i, dtype=torch.long) for i, n in enumerate(names)]
        ),
        groups=names,
    )


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
