"""Streaming sufficient statistics in float64: count, mean and co-moment, merged exactly.

A batch contributes its count, mean and centered co-moment ``sum (x - mean)(y - mean)^T``; two
summaries merge with Chan et al.'s pairwise update, which is exact in real arithmetic,
associative, and stable (no large sums of squares cancelling). Activations are never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cipm.errors import CipmError

__all__ = ["CrossMoments", "Moments"]


@dataclass(frozen=True)
class Moments:
    """Count, mean (n,) and co-moment (n, n) of n variables, in float64."""

    count: int
    mean: torch.Tensor
    comoment: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> Moments:
        """Moments of the rows of a (samples, n) matrix."""
        x = x.detach().to(torch.float64)
        mean = x.mean(0)
        centered = x - mean
        return cls(x.shape[0], mean, centered.T @ centered)

    def merge(self, other: Moments) -> Moments:
        _check_sizes(self.mean.shape, other.mean.shape)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        scale = self.count * other.count / n
        return Moments(n, mean, self.comoment + other.comoment + torch.outer(delta, delta) * scale)

    @property
    def cov(self) -> torch.Tensor:
        """Sample covariance (n, n), unbiased."""
        return self.comoment / max(self.count - 1, 1)

    @property
    def std(self) -> torch.Tensor:
        return self.cov.diagonal().clamp_min(0).sqrt()

    @property
    def corr(self) -> torch.Tensor:
        """Pearson correlation (n, n); a constant unit correlates 0 with everything."""
        return _normalize(self.cov, self.std, self.std)


@dataclass(frozen=True)
class CrossMoments:
    """Moments of two sets of variables seen on the same samples, and their cross co-moment."""

    a: Moments
    b: Moments
    cross: torch.Tensor  # sum over samples of (a - mean_a)(b - mean_b)^T, shape (n_a, n_b)

    @classmethod
    def of(cls, xa: torch.Tensor, xb: torch.Tensor) -> CrossMoments:
        if xa.shape[0] != xb.shape[0]:
            raise CipmError(f"cross moments need the same samples: {xa.shape[0]} vs {xb.shape[0]}")
        ma, mb = Moments.of(xa), Moments.of(xb)
        ca = xa.detach().to(torch.float64) - ma.mean
        cb = xb.detach().to(torch.float64) - mb.mean
        return cls(ma, mb, ca.T @ cb)

    def merge(self, other: CrossMoments) -> CrossMoments:
        _check_sizes(self.cross.shape, other.cross.shape)
        n = self.a.count + other.a.count
        da = other.a.mean - self.a.mean
        db = other.b.mean - self.b.mean
        scale = self.a.count * other.a.count / n
        cross = self.cross + other.cross + torch.outer(da, db) * scale
        return CrossMoments(self.a.merge(other.a), self.b.merge(other.b), cross)

    @property
    def cov(self) -> torch.Tensor:
        """Cross-covariance (n_a, n_b)."""
        return self.cross / max(self.a.count - 1, 1)

    @property
    def corr(self) -> torch.Tensor:
        """Cross-correlation (n_a, n_b); constant units correlate 0."""
        return _normalize(self.cov, self.a.std, self.b.std)


def _normalize(cov: torch.Tensor, std_a: torch.Tensor, std_b: torch.Tensor) -> torch.Tensor:
    scale = torch.outer(std_a, std_b)
    tiny = torch.finfo(torch.float64).eps * max(float(scale.max()), 1.0)
    return torch.where(scale > tiny, cov / scale.clamp_min(tiny), torch.zeros_like(cov))


def _check_sizes(a: torch.Size, b: torch.Size) -> None:
    if a != b:
        raise CipmError(f"cannot merge statistics of different sizes: {tuple(a)} and {tuple(b)}")
