"""Learned co-canonicalization: federated averaging with no pairwise matching.

Each client puts its model in the meta-analysis network's canonical order, from statistics
of its own data, where it lives (`canonical_client`); the server averages the canonical
models position by position (`canonical_average`). No client model or statistic is compared
with another's: O(n log n) per group and client, against matching's assignment per client
and group. How well it lines units up is measured in docs/results.md (issue 14 and 17
sections): far less well than matching, today.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from cipm.batches import Inputs, model_inputs
from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.merging.average import merge
from cipm.ordering.canonical import canonicalize
from cipm.statistics.collection import CollectConfig, collect
from cipm.statistics.group import Statistics

__all__ = ["canonical_average", "canonical_client"]


def canonical_client(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    data: Iterable[Any],
    *,
    inputs: Inputs = model_inputs,
    method: Any = "learned",
) -> torch.nn.Module:
    """A client's model in learned canonical order, from statistics of its own `data` (the
    client runs this; the model passed in is not changed). `method`: a canonical method of
    `cipm.canonicalize` (another network's: ``meta.order``)."""
    stats = collect(model, graph, data, config=CollectConfig(inputs=inputs, progress=False))
    return canonicalize(model, graph, stats=stats, method=method)


def canonical_average(
    client_models: Sequence[torch.nn.Module],
    graph: SymmetryGraph,
    client_stats: Sequence[Statistics],
    *,
    weights: Sequence[float] | None = None,
    method: Any = "learned",
) -> torch.nn.Module:
    """The weighted average of the clients, each first put in learned canonical order from
    its own statistics (`client_stats[i]`, `cipm.collect` on client i's data) by `method`
    (as in `canonical_client`).

    Raises:
        CipmError: no clients, or not one statistics per client.
    """
    if not client_models:
        raise CipmError("canonical_average needs at least one client model")
    if len(client_stats) != len(client_models):
        raise CipmError(
            f"canonical_average got {len(client_stats)} statistics for "
            f"{len(client_models)} clients; give one per client"
        )
    canonical = [
        canonicalize(m, graph, stats=s, method=method)
        for m, s in zip(client_models, client_stats, strict=True)
    ]
    if weights is not None:
        total = float(sum(weights))
        weights = [w / total for w in weights]
    return merge(canonical, graph, weights=weights) if len(canonical) > 1 else canonical[0]
