"""Activation matching: each group assigned on the cross-correlation of the two models' units
on the same data (`cipm.collect_cross`), with weights breaking ties."""

from __future__ import annotations

import torch

from cipm.alignment.methods import AlignConfig, AlignProblem
from cipm.alignment.weight import weight_matching
from cipm.graph.parts import GroupKind
from cipm.graph.symmetry import Permutation
from cipm.statistics.collection import CollectConfig, collect_cross
from cipm.statistics.group import CrossStatistics

__all__ = ["activation_method", "matching_from_statistics"]


def activation_method(problem: AlignProblem) -> Permutation:
    """The built-in ``"activation"`` method of `cipm.align`.

    Correlations decide every group observed on its own. Nested groups (attention heads and
    the dims within them, GroupNorm groups and the channels within them), whose activations
    only compare once the other is aligned, and ties (dead units) go by weights.
    """
    graph, config = problem.graph, problem.config
    data = problem.needs_data("activation")
    cross = collect_cross(
        problem.model_a,
        problem.model_b,
        graph,
        data,
        config=CollectConfig(progress=config.progress),
    )
    return matching_from_statistics(problem.state_a, problem.state_b, cross, config)


def matching_from_statistics(
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    cross: CrossStatistics,
    config: AlignConfig,
) -> Permutation:
    """Activation matching given cross statistics of A's and B's units, however they were
    gathered (`collect_cross` on one machine, all-reduced over ranks, or sent by a federated
    client that computed them on its own data): the permutation of B onto A."""
    graph = cross.graph
    nesting = {g.within for g in graph} | {g.name for g in graph if g.within}
    evidence = {
        g.name: cross.corr(g.name)
        for g in graph
        if g.kind not in (GroupKind.HEADS, GroupKind.WITHIN_HEAD) and g.name not in nesting
    }
    return weight_matching(
        state_a,
        state_b,
        graph,
        seed=config.seed,
        max_sweeps=config.max_sweeps,
        restarts=config.restarts,
        evidence=evidence,
    )
