"""Weight matching: coordinate descent over a symmetry graph's groups.

Maximize the sum over every state tensor of <W_A, P(W_B)>. For one group, with the others
held, that is a linear assignment on C[i, j] = A's unit-i slices dotted with B's unit-j slices
over every tensor the group lives in. Groups whose neighbours did not move are not re-solved;
the descent stops when a sweep changes nothing. (The descent itself: `cipm.alignment.descent`.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from cipm.alignment.descent import EVIDENCE, DescentStats, Plan, assign, matched_weights
from cipm.alignment.methods import AlignProblem
from cipm.graph.symmetry import Permutation, SymmetryGraph

__all__ = ["EVIDENCE", "DescentStats", "assign", "weight_matching", "weight_method"]


def weight_matching(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    *,
    seed: int = 0,
    max_sweeps: int = 100,
    restarts: int = 1,
    evidence: Mapping[str, torch.Tensor] | None = None,
    start: Permutation | None = None,
    stats: DescentStats | None = None,
) -> Permutation:
    """Weight matching on state dicts.

    `start` warm-starts the descent from a permutation (STE re-solves a slowly moving
    problem every step; from the last answer a sweep or two settles it). `stats`, when
    given, is filled in with the assignments solved and the sweeps run.

    `evidence` maps groups to (n, n) scores (activation correlations) that decide their
    assignment wherever they discriminate; the weights only break their ties (units that are
    constant on the data, such as dead ReLUs, correlate 0 with everything).

    An outer group of a nested pair (heads over head_dim, GroupNorm groups over their
    channels) is scored invariantly to the inner one's alignment (see `Descent.cost`);
    without that, coordinate descent gets stuck with both wrong. Coordinate descent can still
    stop at a local optimum (seen in about 2 % of orders on a transformer whose layers start
    as copies of each other): with `restarts` > 1 it tries more group orders and keeps the
    best match, stopping early when a match reaches the Cauchy-Schwarz bound (B is a
    permuted A).
    """
    plan = Plan(graph, dict(evidence or {}))
    bound = math.sqrt(
        matched_weights(state_a, state_a, graph) * matched_weights(state_b, state_b, graph)
    )
    best: dict[str, torch.Tensor] = {}
    best_score = -math.inf
    for k in range(max(restarts, 1)):
        first = start if k == 0 else None
        perm = plan.descend(state_a, state_b, seed + k, max_sweeps, first, stats)
        match = matched_weights(state_a, state_b, graph, perm)
        score = match + sum(
            EVIDENCE * float(e[torch.arange(len(e)), perm[n]].sum())
            for n, e in plan.evidence.items()
        )
        if score > best_score:
            best, best_score = perm, score
        if match >= bound * (1 - 1e-9):
            break
    return Permutation(graph, best)


def weight_method(problem: AlignProblem) -> Permutation:
    """The built-in ``"weight"`` method of `cipm.align` (data-free)."""
    c = problem.config
    return weight_matching(
        problem.state_a,
        problem.state_b,
        problem.graph,
        seed=c.seed,
        max_sweeps=c.max_sweeps,
        restarts=c.restarts,
    )
