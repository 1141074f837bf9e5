"""How much each unit matters to a model's output: the exact masking relevance.

A unit's relevance is the output error (squared error of every floating output relative to
its variance, as the compression objective measures it) when that one unit is zeroed at its
group's representative site, all others kept: one forward pass per unit, on the inputs given.
It is what the ``relevance`` objective (cipm/meta/builtin_objectives.py) teaches the meta-analysis
network to rank first, and sorted it is the analytic relevance order it is compared with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.meta.masking import MaskedModel
from cipm.pruning.targets import PRUNABLE

__all__ = [
    "leaves",
    "output_error",
    "relevance_groups",
    "relevance_order",
    "relevance_score",
    "unit_relevance",
]


def leaves(outputs: object) -> list[torch.Tensor]:
    """The floating tensors among a model's outputs (any nesting), in order."""
    found, _ = torch.utils._pytree.tree_flatten(outputs)
    return [x for x in found if torch.is_tensor(x) and x.is_floating_point()]


def output_error(outputs: object, reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared error of every floating output relative to its variance, averaged (float64)."""
    terms = []
    for out, ref in zip(leaves(outputs), reference, strict=True):
        spread = (ref - ref.mean(0)).double().square().mean().clamp_min(1e-12)
        terms.append((out.double() - ref.double()).square().mean() / spread)
    return torch.stack(terms).mean()


def relevance_groups(graph: SymmetryGraph, groups: Iterable[str] | None = None) -> list[str]:
    """The groups relevance is measured for: `groups`, or every prunable group (hidden
    units, channels, heads) of at least 2 units."""
    if groups is None:
        return [g.name for g in graph if g.kind in PRUNABLE and g.size >= 2]
    chosen = list(groups)
    unknown = [g for g in chosen if g not in {h.name for h in graph}]
    if unknown:
        raise CipmError(f"unknown groups {unknown}; groups are {[g.name for g in graph]}")
    return chosen


def unit_relevance(
    model: torch.nn.Module | MaskedModel,
    graph: SymmetryGraph,
    inputs: Any,
    groups: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per group, the output error (float64, >= 0) when each unit alone is zeroed.

    Args:
        model: the model (exported once here, never changed), or a `MaskedModel` of it
            over (at least) the groups asked for.
        graph: its symmetry graph.
        inputs: one batch of model inputs (a tensor, a tuple, a dict of keyword inputs).
        groups: group names (default: every prunable group of at least 2 units).

    Raises:
        CipmError: an unknown group, or a model whose outputs have no floating tensor.
    """
    chosen = relevance_groups(graph, groups)
    masked = model if isinstance(model, MaskedModel) else MaskedModel(model, graph, inputs, chosen)
    missing = [g for g in chosen if g not in masked.sites]
    if missing:
        raise CipmError(f"the masked model does not mask groups {missing}")
    with torch.no_grad():
        reference = leaves(masked(inputs, {}))
        if not reference:
            raise CipmError("relevance needs a model with a floating-point output")
        result = {}
        for g in chosen:
            n = graph[g].size
            errors = torch.empty(n, dtype=torch.float64)
            for i in range(n):
                mask = torch.ones(n, dtype=torch.float64)
                mask[i] = 0.0
                errors[i] = output_error(masked(inputs, {g: mask}), reference)
            result[g] = errors
    return result


def relevance_order(graph: SymmetryGraph, relevance: dict[str, torch.Tensor]) -> Permutation:
    """Each group's units by relevance, most relevant first (ties by index); groups without
    a relevance keep their order."""
    order = {}
    for g in graph:
        if g.name in relevance:
            order[g.name] = torch.sort(relevance[g.name], descending=True, stable=True).indices
        else:
            order[g.name] = torch.arange(g.size)
    return Permutation(graph, order)


def relevance_score(relevance: dict[str, torch.Tensor], order: Permutation) -> float:
    """The relevance objective of a hard order, averaged over the groups: 2 sum_i w_i p_i /
    (n - 1) with p_i unit i's position (0 first) and w_i its share of the group's relevance:
    1 for a random order (in expectation), least for `relevance_order`."""
    terms = []
    for g, r in relevance.items():
        n = r.numel()
        if n < 2 or float(r.sum()) <= 0:
            continue
        position = torch.empty(n, dtype=torch.float64)
        position[order[g]] = torch.arange(n, dtype=torch.float64)
        terms.append(2.0 * float((r / r.sum() * position).sum()) / (n - 1))
    if not terms:
        raise CipmError("no group with a positive relevance to score")
    return sum(terms) / len(terms)
