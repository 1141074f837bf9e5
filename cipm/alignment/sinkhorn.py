"""Sinkhorn matching (Sinkhorn re-basin, Pena et al. 2023): soft permutations, then rounded.

Each group's permutation is relaxed to a doubly-stochastic matrix S = Sinkhorn(logits / t).
S acts on B's tensors wherever the group lives (a product factor or a sum segment of a dim,
as the symmetry graph lays it out), so the whole relaxed objective, the squared distance
between A's and the softly permuted B's weights, is differentiable in every group's logits at
once and is descended with Adam while t anneals. Each S is then rounded to the nearest
permutation (a linear assignment), and weight matching polishes the result from there.
"""

from __future__ import annotations

import torch

from cipm.alignment.methods import AlignProblem
from cipm.alignment.weight import assign, weight_matching
from cipm.graph.parts import TensorAxis
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.tensors.units import map_units

__all__ = ["sinkhorn_matching", "sinkhorn_method"]


def sinkhorn_matching(
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    graph: SymmetryGraph,
    *,
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    polish: bool = True,
) -> Permutation:
    """Permutation of B towards A by relaxed, annealed optimization (see module docstring)."""
    by_key = graph.by_key
    keys = sorted(by_key)
    a = {k: state_a[k].detach().to(torch.float64) for k in keys}
    b = {k: state_b[k].detach().to(torch.float64) for k in keys}
    scale = sum(float(t.square().sum()) for t in a.values()) or 1.0
    gen = torch.Generator().manual_seed(seed)
    logits = {
        g.name: (
            0.01 * torch.randn(g.size, g.size, generator=gen, dtype=torch.float64)
        ).requires_grad_(True)
        for g in graph
    }
    opt = torch.optim.Adam(logits.values(), lr=lr)
    for step in range(steps):
        temperature = 1.0 * (0.02 / 1.0) ** (step / max(steps - 1, 1))  # 1 -> 0.02
        soft = {name: _sinkhorn(logit / temperature) for name, logit in logits.items()}
        loss = (
            sum((a[k] - _soft_permute(b[k], by_key[k], soft)).square().sum() for k in keys) / scale
        )
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    rounded = Permutation(graph, {n: assign(logit.detach()) for n, logit in logits.items()})
    if not polish:
        return rounded
    return weight_matching(state_a, state_b, graph, seed=seed, start=rounded)


def _sinkhorn(logits: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Doubly-stochastic matrix from logits by alternating row/column normalization (log-space)."""
    log = logits
    for _ in range(iterations):
        log = log - torch.logsumexp(log, dim=1, keepdim=True)
        log = log - torch.logsumexp(log, dim=0, keepdim=True)
    return log.exp()


def sinkhorn_method(problem: AlignProblem) -> Permutation:
    """The built-in ``"sinkhorn"`` method of `cipm.align` (data-free)."""
    return sinkhorn_matching(
        problem.state_a, problem.state_b, problem.graph, seed=problem.config.seed
    )


def _soft_permute(
    t: torch.Tensor, axes: tuple[TensorAxis, ...], soft: dict[str, torch.Tensor]
) -> torch.Tensor:
    for axis in axes:
        t = map_units(t, axis.dim, axis.layout, soft)
    return t
