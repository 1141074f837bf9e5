"""Statistics over torch.distributed: each rank reads its shard of the data, the float64
sufficient statistics are summed across ranks, and every rank ends with the statistics of
all the data, as if one process had seen it.

Moments are reduced in two all-reduces of one flat float64 buffer each: counts and sums
first (which give the global mean), then every rank's co-moment moved to that mean, ``C_r +
n_r d_r d_r^T`` with ``d_r = mean_r - mean`` (the parallel-axis form of `Moments.merge`),
summed. Exact in real arithmetic; in float64 it agrees with one process to rounding. Every
rank gets the same bytes back, so all ranks hold identical statistics afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.statistics.moments import CrossMoments, Moments

__all__ = ["all_reduce_cross", "all_reduce_moments", "check_same_model"]


def all_reduce_moments(moments: Sequence[Moments], group: Any) -> list[Moments]:
    """The moments of every rank's samples together, per entry of `moments`.

    Args:
        moments: this rank's moments, one per variable set (every rank passes the same
            number of entries, of the same sizes, in the same order).
        group: a `torch.distributed` process group (``torch.distributed.group.WORLD`` for
            all ranks); the default process group must be initialized.

    Raises:
        CipmError: torch.distributed is not initialized, or the ranks hold statistics of
            different sizes (different graphs or groups).
    """
    dist = _dist()
    device = _device(dist, group)
    sizes = [len(m.mean) for m in moments]
    _check_same_layout(dist, group, device, sizes)
    if not moments:
        return []
    first = torch.cat([torch.cat([_count(m), m.mean * m.count]) for m in moments])
    first = _reduce(dist, group, device, first)
    counts, means = _split_sums(first, sizes)
    moved = [
        _moved(m.comoment, m, m, mean, mean).reshape(-1)
        for m, mean in zip(moments, means, strict=True)
    ]
    second = torch.cat(moved)
    second = _reduce(dist, group, device, second)
    out, start = [], 0
    for count, mean, n in zip(counts, means, sizes, strict=True):
        out.append(Moments(count, mean, second[start : start + n * n].reshape(n, n)))
        start += n * n
    return out


def all_reduce_cross(cross: Sequence[CrossMoments], group: Any) -> list[CrossMoments]:
    """The cross moments of every rank's samples together (see `all_reduce_moments`)."""
    dist = _dist()
    device = _device(dist, group)
    own = all_reduce_moments([m for c in cross for m in (c.a, c.b)], group)
    shapes = [tuple(c.cross.shape) for c in cross]
    _check_same_layout(dist, group, device, [a * b for a, b in shapes])
    moved = [
        _moved(c.cross, c.a, c.b, own[2 * i].mean, own[2 * i + 1].mean).reshape(-1)
        for i, c in enumerate(cross)
    ]
    summed = _reduce(dist, group, device, torch.cat(moved)) if moved else torch.zeros(0)
    out, start = [], 0
    for i, (rows, cols) in enumerate(shapes):
        block = summed[start : start + rows * cols].reshape(rows, cols)
        out.append(CrossMoments(own[2 * i], own[2 * i + 1], block))
        start += rows * cols
    return out


def check_same_model(fingerprint: torch.Tensor, group: Any) -> None:
    """Raise a CipmError on every rank unless all ranks pass the same `fingerprint` (of
    their model's weights, to rounding): statistics of different models must not be summed.
    """
    dist = _dist()
    device = _device(dist, group)
    mine = fingerprint.to(torch.float64).reshape(-1)
    _check_same_layout(dist, group, device, [len(mine)])
    both = _reduce(dist, group, device, torch.cat([mine, -mine]), op="MAX")
    high, low = both[: len(mine)], -both[len(mine) :]
    scale = max(float(mine.abs().max()) if len(mine) else 0.0, 1.0)
    if len(mine) and float((high - low).max()) > 1e-9 * scale:
        raise CipmError(
            f"rank {dist.get_rank()}: the ranks' models have other weights (the same "
            "architecture, other values): statistics of different models cannot be summed; "
            "load the same weights on every rank before collect"
        )


def _moved(
    comoment: torch.Tensor, a: Moments, b: Moments, mean_a: torch.Tensor, mean_b: torch.Tensor
) -> torch.Tensor:
    """This rank's co-moment about the global means instead of its own."""
    return comoment + torch.outer(a.mean - mean_a, b.mean - mean_b) * a.count


def _count(m: Moments) -> torch.Tensor:
    return torch.tensor([float(m.count)], dtype=torch.float64)


def _split_sums(flat: torch.Tensor, sizes: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    counts, means, start = [], [], 0
    for n in sizes:
        count = round(float(flat[start]))
        counts.append(count)
        means.append(flat[start + 1 : start + 1 + n] / count)
        start += 1 + n
    return counts, means


def _reduce(
    dist: Any, group: Any, device: torch.device, flat: torch.Tensor, op: str = "SUM"
) -> torch.Tensor:
    """`flat` all-reduced across the ranks; a rank that never comes (its collect failed:
    an empty shard, bad data) or leaves is a CipmError here, not a backend traceback."""
    buffer = flat.to(device=device, dtype=torch.float64).contiguous()
    try:
        dist.all_reduce(buffer, op=getattr(dist.ReduceOp, op), group=group)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CipmError(
            f"rank {dist.get_rank()}: the all-reduce of statistics failed ({first}): another "
            "rank stopped before it (every rank must reach all_reduce; a rank whose collect "
            "failed, on an empty shard or bad data, says why in its own error)"
        ) from e
    return buffer.cpu()


def _check_same_layout(dist: Any, group: Any, device: torch.device, sizes: list[int]) -> None:
    """Every rank must reduce buffers of the same layout; a mismatch would otherwise
    hang or mix unrelated numbers. One small all-reduce of (len, sum, -len, -sum) with MAX."""
    mine = torch.tensor([len(sizes), sum(sizes)], dtype=torch.float64)
    both = _reduce(dist, group, device, torch.cat([mine, -mine]), op="MAX")
    if not (torch.equal(both[:2], mine) and torch.equal(-both[2:], mine)):
        raise CipmError(
            f"rank {dist.get_rank()} holds statistics of {len(sizes)} variable sets "
            f"({sum(sizes)} variables), another rank of other sizes: every rank must "
            "collect with the same model and symmetry graph"
        )


def _device(dist: Any, group: Any) -> torch.device:
    """NCCL reduces CUDA tensors only; other backends (gloo) reduce CPU tensors."""
    if str(dist.get_backend(group)) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise CipmError(
            "statistics over a process group need torch.distributed initialized: call "
            "torch.distributed.init_process_group (torchrun does the rendezvous) first"
        )
    return dist
