"""`cipm.partition`: a group's seriated units cut into k contiguous blocks.

The cut points minimize the normalized cut (sum over blocks of |correlation| leaving the block
over |correlation| touching it), found exactly by dynamic programming over the cut points, so
blocks are exactly contiguous in the returned permutation. `Partition.masks` gives, per block,
boolean masks over every parameter the block's units live in (to freeze a block, or to split a
layer into k narrower ones), `Partition.block_masks` one block's entries across groups (to
train only that block), and `split_order` cuts any order (a relevance order, say) into its
first units and the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import reduce
from itertools import pairwise
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.graph.layout import unit_ids
from cipm.graph.symmetry import Permutation
from cipm.ordering.methods import reorganize_method
from cipm.ordering.problem import order_problem
from cipm.statistics.group import Statistics

__all__ = ["Partition", "partition", "split_order"]


@dataclass(frozen=True)
class Partition:
    """Per group, k contiguous blocks of the units in `permutation`'s order."""

    permutation: Permutation
    blocks: Mapping[str, tuple[range, ...]]
    cut: Mapping[str, float]  # normalized cut of each group's blocks (lower: more separate)
    shapes: Mapping[str, tuple[int, ...]]  # of the tensors the groups live in

    def masks(self, group: str) -> list[dict[str, torch.Tensor]]:
        """For each block of `group`, boolean masks (shaped like the tensors) of the entries
        of every tensor the group lives in that belong to the block's units, in the
        permuted model (``cipm.permute(model, partition.permutation)``)."""
        graph = self.permutation.graph
        if group not in self.blocks:
            raise CipmError(f"group '{group}' was not partitioned; groups: {list(self.blocks)}")
        result: list[dict[str, torch.Tensor]] = []
        for block in self.blocks[group]:
            inside = torch.zeros(graph[group].size, dtype=torch.bool)
            inside[block.start : block.stop] = True
            masks: dict[str, torch.Tensor] = {}
            for m in graph[group].members:
                ids = unit_ids(graph.layout(m.key, m.dim), group)
                along = (ids >= 0) & inside[ids.clamp_min(0)]
                shape = [1] * len(self.shapes[m.key])
                shape[m.dim] = -1
                mask = along.view(shape).expand(self.shapes[m.key])
                masks[m.key] = masks[m.key] | mask if m.key in masks else mask.clone()
            result.append(masks)
        return result

    def block_masks(self, block: int, *, isolated: bool = False) -> dict[str, torch.Tensor]:
        """Boolean masks of block number `block` of every partitioned group, over every
        tensor they live in (in the permuted model): by default each entry some unit of the
        block lives in (a layer's rows and bias, the next layer's columns: everything the
        block touches); with `isolated`, only the entries whose every partitioned axis is in
        the block (the block's own pathway: a layer's weights from the block's units of the
        group before to its units of this one, not those between blocks).

        Raises:
            CipmError: a group has no block number `block`.
        """
        short = [g for g, b in self.blocks.items() if not 0 <= block < len(b)]
        if short or isinstance(block, bool) or not isinstance(block, int):
            raise CipmError(f"no block {block!r} in groups {short or list(self.blocks)}")
        per_key: dict[str, list[torch.Tensor]] = {}
        for group in self.blocks:
            for key, mask in self.masks(group)[block].items():
                per_key.setdefault(key, []).append(mask)
        combine = torch.logical_and if isolated else torch.logical_or
        return {key: reduce(combine, masks) for key, masks in per_key.items()}


def partition(
    model: torch.nn.Module,
    stats: Statistics,
    k: int = 4,
    *,
    method: Any = "auto",
    groups: Iterable[str] | None = None,
) -> Partition:
    """Cut each group's units into k contiguous blocks with little correlation between them.

    Units are seriated (as `reorganize`, by its `method`), then the k - 1 cut points
    minimizing the normalized cut are found exactly over contiguous splits of at least half
    the mean block size (so no block degenerates to a lone dead unit). Groups with fewer
    than 2k units are left out.

    Raises:
        CipmError: k < 2, or statistics of another model.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise CipmError(f"a partition needs k >= 2 blocks, got {k}")
    problem = order_problem(model, None, stats, groups)
    named = problem.groups
    chosen = [g for g in named if stats.graph[g].size >= 2 * k]
    small = [g for g in named if g not in chosen]
    if (groups is not None and small) or not chosen:
        sizes = ", ".join(f"'{g}' {stats.graph[g].size}" for g in small)
        raise CipmError(
            f"cannot cut into {k} blocks of at least 2 units groups of fewer than {2 * k} "
            f"units ({sizes}); choose a smaller k or larger groups"
        )
    seriated = reorganize_method(method, stats.graph)(replace(problem, groups=tuple(chosen)))
    order: dict[str, torch.Tensor] = {}
    blocks: dict[str, tuple[range, ...]] = {}
    cut: dict[str, float] = {}
    for g in stats.graph:
        if g.name not in chosen:
            order[g.name] = torch.arange(g.size)
            continue
        seq = seriated[g.name]
        a = stats[g.name].corr.abs().to(torch.float64)[seq][:, seq].fill_diagonal_(0.0)
        bounds, value = _min_ncut(a, k)
        order[g.name] = seq
        blocks[g.name] = tuple(range(s, e) for s, e in pairwise(bounds))
        cut[g.name] = value
    shapes = {key: tuple(t.shape) for key, t in problem.tensors.items()}
    return Partition(Permutation(stats.graph, order), blocks, cut, shapes)


def split_order(
    model: torch.nn.Module,
    stats: Statistics,
    order: Permutation,
    first: float | Mapping[str, int],
    *,
    groups: Iterable[str] | None = None,
) -> Partition:
    """Two blocks per group: the first units of `order` (a fraction of every group, or a
    count per group) and the rest, e.g. a relevance order's most relevant units as block 0.

    Raises:
        CipmError: an order of another graph, statistics of another model, or a block that
            would be empty.
    """
    problem = order_problem(model, None, stats, groups)
    if order.graph != stats.graph:
        raise CipmError("the order is of another graph than the statistics")
    named = problem.groups
    blocks: dict[str, tuple[range, ...]] = {}
    cut: dict[str, float] = {}
    for name in named:
        n = stats.graph[name].size
        if isinstance(first, Mapping):
            if name not in first:
                continue
            m = first[name]
        elif isinstance(first, float) and 0.0 < first < 1.0:
            m = round(first * n)
        else:
            raise CipmError(f"first must be a fraction in (0, 1) or counts per group: {first!r}")
        if isinstance(m, bool) or not isinstance(m, int) or not 0 < m < n:
            raise CipmError(f"group '{name}' of {n} units cannot be split after {m!r} units")
        seq = order[name]
        a = stats[name].corr.abs().to(torch.float64)[seq][:, seq].fill_diagonal_(0.0)
        blocks[name] = (range(0, m), range(m, n))
        cut[name] = _ncut(a, [0, m, n])
    shapes = {key: tuple(t.shape) for key, t in problem.tensors.items()}
    return Partition(order, blocks, cut, shapes)


def _ncut(a: torch.Tensor, bounds: list[int]) -> float:
    total = 0.0
    for s, e in pairwise(bounds):
        volume = float(a[s:e].sum())
        if volume > 0:
            total += max(volume - float(a[s:e, s:e].sum()), 0.0) / volume
    return total


def _min_ncut(a: torch.Tensor, k: int) -> tuple[list[int], float]:
    """Cut points 0 = b0 < ... < bk = n of a seriated |corr| matrix minimizing
    sum_blocks cut(block) / volume(block), exactly, by dynamic programming; every block has at
    least n / 2k units."""
    n = a.shape[0]
    least = max(1, n // (2 * k))
    prefix = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    prefix[1:, 1:] = a.cumsum(0).cumsum(1)
    degree = torch.cat([torch.zeros(1, dtype=torch.float64), a.sum(1).cumsum(0)])
    starts = torch.arange(n + 1)

    def cost(end: int) -> torch.Tensor:
        """ncut term of every block [s, end) for s = 0..end-1."""
        s = starts[: max(end - least + 1, 0)]
        within = prefix[end, end] - prefix[s, end] - prefix[end, s] + prefix[s, s]
        volume = degree[end] - degree[s]
        leaving = (volume - within).clamp_min(0.0)  # >= 0 exactly; rounding can dip below
        return torch.where(volume > 0, leaving / volume.clamp_min(1e-300), 0.0)

    inf = float("inf")
    best = torch.full((k + 1, n + 1), inf, dtype=torch.float64)
    back = torch.zeros((k + 1, n + 1), dtype=torch.long)
    best[0, 0] = 0.0
    for end in range(least, n + 1):
        c = cost(end)
        for j in range(1, min(k, end // least) + 1):
            total = best[j - 1, : len(c)] + c
            i = int(torch.argmin(total))
            best[j, end], back[j, end] = total[i], i
    bounds = [n]
    for j in range(k, 0, -1):
        bounds.append(int(back[j, bounds[-1]]))
    return bounds[::-1], float(best[k, n])
