"""From scores to orders: hard ranks at inference, torchsort's soft ranks in training.

Ranks are normalized to [0, 1] within a group, 1 for the highest score (the unit a policy
puts first and pruning keeps longest). Soft ranks average scores closer than the
regularization strength, so scores are standardized first and spread over the group's width
(a gap of one standard deviation spans n / 4 ranks): a strength of 1 then averages units whose
scores are closer than about four standard deviations per n, whatever the width and the
network's output scale. Training anneals the strength geometrically (`strength_at`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["soft_ranks", "standardized", "strength_at"]


def standardized(scores: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation (a constant vector stays zero)."""
    centered = scores - scores.mean()
    spread = centered.square().mean().sqrt()
    return centered / (spread + 1e-12)


def soft_ranks(scores: torch.Tensor, strength: float) -> torch.Tensor:
    """Differentiable normalized ranks in [0, 1] of one group's scores (1: highest)."""
    import torchsort

    n = scores.numel()
    if n < 2:
        return torch.ones_like(scores)
    theta = standardized(scores) * (n / 4.0)
    ranks = torchsort.soft_rank(theta[None], regularization_strength=strength)[0]
    return (ranks - 1.0) / (n - 1)


def strength_at(step: int, steps: int, start: float = 1.0, end: float = 0.05) -> float:
    """The soft-rank regularization strength at `step` of `steps`: geometric from `start`
    down to `end`."""
    if steps <= 1:
        return end
    t = min(max(step / (steps - 1), 0.0), 1.0)
    return math.exp(math.log(start) + t * (math.log(end) - math.log(start)))
