"""Streaming sufficient statistics in float64: count, sum, sum of outer products.

An accumulator adds batches into the count, the sum and the sum of outer products of the data
minus a fixed shift (the first batch's mean): with the shift near the mean, the co-moment
``S2 - S1 S1^T / N`` read at the end does not cancel catastrophically. Products run in the
data's dtype (float32 for half-precision data) and are added into float64 sums every
`FLUSH_SAMPLES` samples (float32 models: float32 products over at most 65536 samples, float64
sums; float64 models: float64 throughout). A group's own sum of outer products is symmetric,
so only its lower triangle is computed: about half the work of the product.

Read-out `Moments` (count, mean, co-moment) of separate shards, workers or clients merge with
Chan et al.'s pairwise update: exact in real arithmetic, associative and stable. Activations
are never stored.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch

from cipm.errors import CipmError

__all__ = ["CrossAccumulator", "CrossMoments", "MomentAccumulator", "Moments"]


@dataclass(frozen=True)
class Moments:
    """Count, mean (n,) and co-moment (n, n) of n variables, in float64."""

    count: int
    mean: torch.Tensor
    comoment: torch.Tensor

    def __post_init__(self) -> None:
        count = self.count
        if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
            raise CipmError(f"moments need a whole count >= 1 (the samples seen), got {count!r}")
        object.__setattr__(self, "count", int(count))
        _check_tensor(self.mean, "mean")
        _check_tensor(self.comoment, "co-moment")
        n = len(self.mean) if self.mean.dim() == 1 else -1
        if n < 0 or tuple(self.comoment.shape) != (n, n):
            raise CipmError(
                "moments of n variables need a mean of shape (n,) and a co-moment of (n, n), "
                f"got {tuple(self.mean.shape)} and {tuple(self.comoment.shape)}"
            )

    @classmethod
    def of(cls, x: torch.Tensor) -> Moments:
        """Moments of the rows of a (samples, n) matrix, or of a (pre, n, post) block whose
        samples are every (pre, post) pair (a conv map as (batch, channels, positions))."""
        acc = MomentAccumulator()
        acc.add(x.unsqueeze(-1) if x.dim() == 2 else x)
        return acc.moments()

    def merge(self, other: Moments) -> Moments:
        _check_same_kind(self, other)
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
        return (self.comoment.diagonal() / max(self.count - 1, 1)).clamp_min(0).sqrt()

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

    def __post_init__(self) -> None:
        if not isinstance(self.a, Moments) or not isinstance(self.b, Moments):
            raise CipmError(
                f"cross moments are of two Moments, got {type(self.a).__name__} and "
                f"{type(self.b).__name__}"
            )
        if self.a.count != self.b.count:
            raise CipmError(
                f"cross moments are of the same samples: counts {self.a.count} and {self.b.count}"
            )
        _check_tensor(self.cross, "cross co-moment")
        shape = (len(self.a.mean), len(self.b.mean))
        if tuple(self.cross.shape) != shape:
            raise CipmError(
                f"the cross co-moment of {shape[0]} and {shape[1]} variables must be of shape "
                f"{shape}, got {tuple(self.cross.shape)}"
            )

    @classmethod
    def of(cls, xa: torch.Tensor, xb: torch.Tensor) -> CrossMoments:
        """Cross moments of sample-aligned (samples, n) matrices or (pre, n, post) blocks."""
        a = xa.unsqueeze(-1) if xa.dim() == 2 else xa
        b = xb.unsqueeze(-1) if xb.dim() == 2 else xb
        if (a.shape[0], a.shape[2]) != (b.shape[0], b.shape[2]):
            raise CipmError(
                f"cross moments need the same samples: {tuple(xa.shape)} vs {tuple(xb.shape)}"
            )
        acc = CrossAccumulator()
        acc.add(a, b)
        return acc.moments()

    def merge(self, other: CrossMoments) -> CrossMoments:
        _check_same_kind(self, other)
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


def _check_tensor(value: Any, what: str) -> None:
    """A moment is a dense tensor of real floats that holds values (not on the meta device)."""
    if (
        not isinstance(value, torch.Tensor)
        or not value.is_floating_point()
        or value.layout != torch.strided
        or value.device.type == "meta"
    ):
        raise CipmError(f"the {what} of moments must be a dense float tensor, got {value!r:.80}")


def _check_same_kind(mine: Any, other: Any) -> None:
    if type(other) is not type(mine):
        raise CipmError(
            f"cannot merge {type(mine).__name__} with a {type(other).__name__}: merge statistics "
            "of the same kind"
        )


def _check_sizes(a: torch.Size, b: torch.Size) -> None:
    if a != b:
        raise CipmError(f"cannot merge statistics of different sizes: {tuple(a)} and {tuple(b)}")


class MomentAccumulator:
    """Adds (pre, n, post) blocks of one group's units; `moments()` reads the result."""

    # partial grams in the data's dtype move into the float64 sum after this many samples,
    # which bounds float32 rounding while sparing a float64 n x n update per batch
    FLUSH_SAMPLES = 1 << 16

    def __init__(self, gram: bool = True) -> None:
        """`gram=False` keeps count and mean only (the co-moment reads as zeros): for a side
        of cross moments whose own covariance is not needed."""
        self.gram = gram
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None  # float64 lower triangle, from the first flush on
        self._part: torch.Tensor | None = None  # lower triangle, since the last flush
        self._part_samples = 0

    def add(self, blocks: torch.Tensor) -> torch.Tensor:
        """Add one batch; returns its (float64) sum, so callers can check it is finite."""
        return self._add(blocks)[0]

    def _add(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`add`, also returning the batch minus the shift (cross moments multiply it)."""
        blocks = _working(blocks.detach())
        pre, n, post = blocks.shape
        if self.shift is None:
            self.shift = blocks.double().mean((0, 2))
            self.s1 = torch.zeros(n, dtype=torch.float64)
        centered = blocks - self.shift.to(blocks.dtype)[:, None]
        total = centered.sum((0, 2)).double()
        self.s1 += total  # type: ignore[operator]
        if self.gram:
            self._part = _add_own_gram(self._part, centered)
        self.count += pre * post
        self._part_samples += pre * post
        if self._part_samples >= self.FLUSH_SAMPLES:
            self._flush()
        return total, centered

    def moments(self) -> Moments:
        self._flush()
        assert self.shift is not None and self.s1 is not None
        mean_shifted = self.s1 / self.count
        if self.s2 is None:
            comoment = torch.zeros(len(self.s1), len(self.s1), dtype=torch.float64)
        else:  # the whole symmetric matrix from its lower triangle, minus S1 S1^T / N
            comoment = self.s2 + self.s2.T
            comoment.diagonal().sub_(self.s2.diagonal())
            comoment.addr_(self.s1, mean_shifted, alpha=-1)
        return Moments(self.count, self.shift + mean_shifted, comoment)

    def _flush(self) -> None:
        if self._part is not None:
            lower = self._part.tril_()  # in place: no n x n temporaries
            self.s2 = lower.double() if self.s2 is None else self.s2.add_(lower)
            self._part = None
        self._part_samples = 0


class CrossAccumulator:
    """Adds sample-aligned blocks of two models' units for one group."""

    def __init__(self, grams: tuple[bool, bool] = (True, True)) -> None:
        """`grams`: whether A's and B's own co-moments are accumulated too."""
        self.a, self.b = MomentAccumulator(grams[0]), MomentAccumulator(grams[1])
        self.cross: torch.Tensor | None = None

    def add(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (total_a, ca), (total_b, cb) = self.a._add(xa), self.b._add(xb)
        part = _gram(ca, cb).double()
        self.cross = part if self.cross is None else self.cross.add_(part)
        return total_a, total_b

    def moments(self) -> CrossMoments:
        assert self.cross is not None and self.a.s1 is not None and self.b.s1 is not None
        a, b = self.a.moments(), self.b.moments()
        return CrossMoments(a, b, self.cross - torch.outer(self.a.s1 / self.a.count, self.b.s1))


def _rows(x: torch.Tensor) -> torch.Tensor | None:
    """(pre, n, post) blocks as a (samples, n) matrix: a view when post is 1, a transposed
    copy when a batched product would need more memory than that; else None."""
    pre, n, post = x.shape
    if post == 1:
        return x.reshape(pre, n)
    if pre > 1 and pre * n * n > 4 * x.numel():
        return x.movedim(1, -1).reshape(-1, n)
    return None


def _working(x: torch.Tensor) -> torch.Tensor:
    """Products of half-precision activations run in float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _add_own_gram(out: torch.Tensor | None, x: torch.Tensor, strip: int = 256) -> torch.Tensor:
    """`out` plus the sum over samples of x x^T for (pre, n, post) blocks (a new sum when
    `out` is None), computed on the lower triangle only: read `out.tril()`. Strips of
    `strip` rows, each a GEMM up to the diagonal, do a little over half the work of the
    whole symmetric product."""
    rows = _rows(x)
    if rows is None and x.shape[0] != 1:
        return _gram(x, x) if out is None else out.add_(_gram(x, x))
    units = rows.T if rows is not None else x[0]  # (n, samples)
    n = units.shape[0]
    beta = 1.0
    if out is None:  # beta = 0 ignores what torch.empty holds
        out, beta = units.new_empty(n, n), 0.0
    for i in range(0, n, strip):
        j = min(i + strip, n)
        out[i:j, :j].addmm_(units[i:j], units[:j].T, beta=beta)
    return out


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The sum over samples of a b^T, for sample-aligned (pre, n, post) blocks."""
    ma, mb = _rows(a), _rows(b)
    if ma is not None and mb is not None:
        return ma.T @ mb
    if a.shape[0] == 1:
        return a[0] @ b[0].T
    return torch.bmm(a, b.transpose(1, 2)).sum(0)
