"""What the meta-network reads of a model: its units as one graph at three scales.

Nodes are every group's units with invariant features (activation mean and spread, weight
norms in and out, bias, how strongly the unit correlates with the others), standardized
within the group so the same network serves any width and scale. Four relations, each a
sparse matrix that averages over a unit's neighbours with the edges' weights: within a group,
each unit's top-k |correlation| neighbours, weighted by the correlation (``correlation``)
and by its magnitude (``strength``); between groups, for every weight whose rows are one
group's units and whose columns another's, each output unit's k largest-magnitude inputs
(``inputs``, magnitude relative to the weight's mean) and the transpose (``outputs``: the
units a unit feeds). Neighbours are chosen so that no order can change them
(`cipm.meta.edges.top_k_edges`: ties with the k-th are kept, zero edges dropped).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from cipm.graph.parts import GroupKind
from cipm.graph.symmetry import SymmetryGraph
from cipm.meta.config import MetaConfig
from cipm.meta.edges import top_k_edges, weight_links
from cipm.statistics.group import GroupStatistics, Statistics

__all__ = ["FEATURES", "RELATIONS", "MetaInput", "meta_input"]

# the kinds the network was made to read; a kind added since reads as "other"
KINDS = tuple(
    GroupKind(k) for k in ("heads", "within_head", "residual", "channels", "hidden", "other")
)
FEATURES = (
    "mean",
    "log_std",
    "log_in_norm",
    "log_out_norm",
    "bias",
    "mean_abs_corr",
    "max_abs_corr",
    *(f"kind_{k.value}" for k in KINDS),
)
RELATIONS = ("correlation", "strength", "inputs", "outputs")
_WEIGHT_FEATURES = slice(2, 5)
_CLAMP = 6.0  # standardized features beyond this many deviations carry no more information


@dataclass(frozen=True)
class MetaInput:
    """One model's units as a graph (float64): node features, the `RELATIONS` as sparse
    (nodes, nodes) CSR matrices whose row i averages over unit i's neighbours, and which
    group each node belongs to (nodes are the groups' units in graph order)."""

    x: torch.Tensor  # (nodes, len(FEATURES))
    relations: Mapping[str, torch.Tensor]
    node_group: torch.Tensor  # (nodes,) index into `groups`
    groups: tuple[str, ...]
    offsets: tuple[int, ...]  # first node of each group, and the number of nodes last

    def split(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-node values (nodes, ...) cut into one tensor per group."""
        return {g: values[self.offsets[i] : self.offsets[i + 1]] for i, g in enumerate(self.groups)}


def meta_input(
    stats: Statistics, tensors: Mapping[str, torch.Tensor], config: MetaConfig
) -> MetaInput:
    """The graph of `stats`' model (`tensors`: its `fitted_tensors`, for the weight edges)."""
    graph = stats.graph
    names = tuple(g.name for g in graph)
    offsets = [0]
    for g in graph:
        offsets.append(offsets[-1] + g.size)
    xs, intra_index, intra_attr = [], [], []
    for i, name in enumerate(names):
        s = stats[name]
        relation = _relation(s, config)
        xs.append(_features(s, relation, config))
        index, attr = top_k_edges(relation, config.k, exclude_self=True)
        intra_index.append(index + offsets[i])
        intra_attr.append(attr)
    index, attr = torch.cat(intra_index, 1), torch.cat(intra_attr)
    nodes = offsets[-1]
    w_index, w_attr = _weight_edges(
        graph, tensors, config, dict(zip(names, offsets[:-1], strict=True))
    )
    return MetaInput(
        x=torch.cat(xs),
        relations={
            "correlation": _mean_matrix(index, attr, nodes),
            "strength": _mean_matrix(index, attr.abs(), nodes),
            "inputs": _mean_matrix(w_index, w_attr, nodes),
            "outputs": _mean_matrix(w_index.flip(0), w_attr, nodes),
        },
        node_group=torch.cat(
            [torch.full((g.size,), i, dtype=torch.long) for i, g in enumerate(graph)]
        ),
        groups=names,
        offsets=tuple(offsets),
    )


def _relation(s: GroupStatistics, config: MetaConfig) -> torch.Tensor:
    if config.correlation == "pearson":
        return s.corr.to(torch.float64)
    cov = s.cov.to(torch.float64)
    top = float(cov.diagonal().max()) if cov.numel() else 0.0
    return cov / top if top > 0 else cov


def _features(s: GroupStatistics, relation: torch.Tensor, config: MetaConfig) -> torch.Tensor:
    n = relation.shape[0]
    strength = relation.abs().fill_diagonal_(0.0)
    f = s.features
    columns = [
        _standardized(s.mean),
        _standardized(_log(s.std)),
        _standardized(_log(f.in_norm)),
        _standardized(_log(f.out_norm)),
        _standardized(f.bias),
        _standardized(strength.sum(1) / max(n - 1, 1)),
        _standardized(strength.amax(1) if n > 1 else torch.zeros(n, dtype=torch.float64)),
    ]
    x = torch.stack(columns, 1)
    if not config.weight_features:
        x[:, _WEIGHT_FEATURES] = 0.0
    kind = torch.zeros(n, len(KINDS), dtype=torch.float64)
    kind[:, KINDS.index(s.group.kind if s.group.kind in KINDS else GroupKind.OTHER)] = 1.0
    return torch.cat([x, kind], 1)


def _log(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    top = float(x.max()) if x.numel() else 0.0
    return torch.log(x + (1e-8 * top + 1e-300))


def _standardized(v: torch.Tensor) -> torch.Tensor:
    v = v.to(torch.float64)
    if v.numel() < 2:
        return torch.zeros_like(v)
    spread = float(v.std())
    if not spread > 1e-12 * (float(v.abs().max()) + 1e-300):
        return torch.zeros_like(v)
    return ((v - v.mean()) / spread).clamp(-_CLAMP, _CLAMP)


def _mean_matrix(index: torch.Tensor, weight: torch.Tensor, nodes: int) -> torch.Tensor:
    """Sparse CSR (nodes, nodes): row `index[0]`, column `index[1]`, the weight over the
    row's number of edges."""
    degree = torch.bincount(index[0], minlength=nodes).clamp_min(1).to(torch.float64)
    values = weight.to(torch.float64) / degree[index[0]]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        coo = torch.sparse_coo_tensor(index, values, (nodes, nodes), check_invariants=True)
        return coo.coalesce().to_sparse_csr()


def _weight_edges(
    graph: SymmetryGraph,
    tensors: Mapping[str, torch.Tensor],
    config: MetaConfig,
    offsets: Mapping[str, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges (output unit, input unit) through each weight whose dims 0 and 1 are whole
    groups, with their relative magnitude (edges,)."""
    indices, attrs = [], []
    links = weight_links(graph, tensors) if config.hierarchical else iter(())
    for out_group, in_group, magnitude in links:
        mean = float(magnitude.mean())
        if mean == 0.0:
            continue
        index, attr = top_k_edges(magnitude / mean, config.k_weights)
        indices.append(torch.stack([index[0] + offsets[out_group], index[1] + offsets[in_group]]))
        attrs.append(attr)
    if not indices:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    return torch.cat(indices, 1), torch.cat(attrs)
