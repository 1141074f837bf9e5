"""`cipm.reorganize` and `cipm.partition`: correlated units made contiguous, then cut into blocks.

Reorganization is seriation of each group's |correlation| matrix: ``"spectral"`` orders units
by the Fiedler vector of the correlation graph's normalized Laplacian (Atkins et al., 1998),
``"olo"`` by average-linkage clustering with optimal leaf ordering (Bar-Joseph et al., 2001,
scipy). `diagonality` scores the result: 0 for a random order, towards 1 the closer strong
correlations sit to the diagonal.

Partitioning cuts a group's seriated order into k contiguous blocks minimizing the normalized
cut (sum over blocks of |correlation| leaving the block over |correlation| touching it), by
dynamic programming over the cut points, so blocks are exactly contiguous in the returned
permutation. `Partition.masks` gives, per block, boolean masks over every parameter the block's
units live in (to freeze a block, or to split a layer into k narrower ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cipm.errors import CipmError
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import Layout, Leaf, Product, SymmetryGraph
from cipm.io import pyplot, save_figure
from cipm.statistics.group import Statistics
from cipm.tensors.modify import fitted_tensors

__all__ = [
    "Partition",
    "diagonality",
    "partition",
    "plot_correlation",
    "reorganize",
    "seriate",
    "unit_ids",
]

Seriation = Literal["auto", "spectral", "olo"]
# "auto" uses optimal leaf ordering up to this many units (its cost grows with the cube)
OLO_UNITS = 1024


def reorganize(
    model: torch.nn.Module,
    stats: Statistics,
    *,
    method: Seriation = "auto",
    groups: Iterable[str] | None = None,
) -> Permutation:
    """A permutation that makes every group's correlated units contiguous.

    Args:
        model: the model `stats` were collected on (not changed; apply the result with
            `cipm.permute`).
        stats: `cipm.collect` statistics of `model`.
        method: ``"olo"`` (optimal leaf ordering of average-linkage clusters; cubic in the
            group size), ``"spectral"`` (Fiedler vector; fast at any size, but one vector
            separates two clusters best), or ``"auto"``: olo up to 1024 units, else spectral.
        groups: names of the groups to reorder (default: all; the others keep their order).
    """
    _check(model, stats)
    chosen = _chosen(stats.graph, groups)
    return Permutation(
        stats.graph,
        {
            g.name: seriate(stats[g.name].corr, method)
            if g.name in chosen
            else torch.arange(g.size)
            for g in stats.graph
        },
    )


def seriate(corr: torch.Tensor, method: Seriation = "auto") -> torch.Tensor:
    """An order of the units (indices) that puts strongly correlated ones next to each other."""
    a = corr.abs().to(torch.float64).fill_diagonal_(0.0)
    n = a.shape[0]
    if method == "auto":
        method = "olo" if n <= OLO_UNITS else "spectral"
    if method == "olo":
        from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
        from scipy.spatial.distance import squareform

        distance = squareform((1.0 - a).fill_diagonal_(0.0).clamp_min(0.0).numpy(), checks=False)
        tree = linkage(distance, method="average")
        return torch.from_numpy(leaves_list(optimal_leaf_ordering(tree, distance)).astype(np.int64))
    if method != "spectral":
        raise CipmError(f"seriation method must be 'auto', 'spectral' or 'olo', not {method!r}")
    degree = a.sum(1)
    scale = torch.where(degree > 0, degree.rsqrt(), torch.zeros_like(degree))
    laplacian = torch.eye(n, dtype=torch.float64) - scale[:, None] * a * scale[None, :]
    _, vectors = torch.linalg.eigh(laplacian)
    fiedler = vectors[:, 1] * scale if n > 2 else torch.arange(n, dtype=torch.float64)
    if float((fiedler * torch.arange(n, dtype=torch.float64)).sum()) < 0:  # sign: stable order
        fiedler = -fiedler
    return torch.sort(fiedler, stable=True).indices


def diagonality(corr: torch.Tensor, order: torch.Tensor | None = None) -> float:
    """How close to the diagonal the |correlation| mass lies in `order` (default: as is):
    ``1 - E|i - j| / ((n + 1) / 3)`` with pairs weighted by |corr|; 0 for a random order."""
    a = corr.abs().to(torch.float64)
    if order is not None:
        a = a[order][:, order]
    a = a.fill_diagonal_(0.0)
    n = a.shape[0]
    total = float(a.sum())
    if n < 3 or total == 0.0:
        return 0.0
    idx = torch.arange(n, dtype=torch.float64)
    distance = (idx[:, None] - idx[None, :]).abs()
    return 1.0 - float((a * distance).sum()) / total / ((n + 1) / 3)


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


def partition(
    model: torch.nn.Module,
    stats: Statistics,
    k: int = 4,
    *,
    method: Seriation = "auto",
    groups: Iterable[str] | None = None,
) -> Partition:
    """Cut each group's units into k contiguous blocks with little correlation between them.

    Units are seriated (as `reorganize`), then the k - 1 cut points minimizing the normalized
    cut are found exactly over contiguous splits of at least half the mean block size (so no
    block degenerates to a lone dead unit). Groups with fewer than 2k units are left out.

    Raises:
        CipmError: k < 2, or statistics of another model.
    """
    if k < 2:
        raise CipmError(f"a partition needs k >= 2 blocks, got {k}")
    _check(model, stats)
    chosen = [g for g in _chosen(stats.graph, groups) if stats.graph[g].size >= 2 * k]
    order: dict[str, torch.Tensor] = {}
    blocks: dict[str, tuple[range, ...]] = {}
    cut: dict[str, float] = {}
    for g in stats.graph:
        if g.name not in chosen:
            order[g.name] = torch.arange(g.size)
            continue
        seq = seriate(stats[g.name].corr, method)
        a = stats[g.name].corr.abs().to(torch.float64)[seq][:, seq].fill_diagonal_(0.0)
        bounds, value = _min_ncut(a, k)
        order[g.name] = seq
        blocks[g.name] = tuple(range(s, e) for s, e in pairwise(bounds))
        cut[g.name] = value
    shapes = {key: tuple(t.shape) for key, t in fitted_tensors(model, stats.graph).items()}
    return Partition(Permutation(stats.graph, order), blocks, cut, shapes)


def unit_ids(layout: Layout, group: str) -> torch.Tensor:
    """For each position of a dimension laid out as `layout`, the index of `group`'s unit
    there, or -1 where the position holds none of its units (another segment)."""
    if isinstance(layout, Leaf):
        if layout.group == group:
            return torch.arange(layout.size)
        return torch.full((layout.size,), -1, dtype=torch.long)
    if isinstance(layout, Product):
        ids = torch.full((), -1, dtype=torch.long)
        for factor in layout.factors:
            ids = torch.maximum(ids.unsqueeze(-1), unit_ids(factor, group)).flatten()
        return ids.reshape(-1)
    return torch.cat([unit_ids(part, group) for part in layout.parts])


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


def _chosen(graph: SymmetryGraph, groups: Iterable[str] | None) -> list[str]:
    names = [g.name for g in graph]
    if groups is None:
        return names
    chosen = list(groups)
    unknown = [g for g in chosen if g not in names]
    if unknown:
        raise CipmError(f"unknown groups {unknown}; groups are {names}")
    return chosen


def _check(model: torch.nn.Module, stats: Statistics) -> None:
    if not isinstance(stats, Statistics):
        raise CipmError(f"expected cipm.collect statistics, got {type(stats).__name__}")
    stats.check_model(model)


def plot_correlation(
    stats: Statistics,
    group: str,
    path: str | os.PathLike[str],
    *,
    order: Permutation | Partition | None = None,
    title: str = "",
) -> Path:
    """Write a heatmap of a group's unit correlations as a PNG (atomically).

    Args:
        stats: `cipm.collect` statistics.
        group: the group to draw.
        order: a `reorganize` permutation or a `partition` (its blocks outlined): draws the
            units as they are and, beside them, in this order. Default: as they are only.
        title: figure title (default: the group's name).
    """
    plt = pyplot()
    corr = stats[group].corr
    panels: list[tuple[str, torch.Tensor, tuple[range, ...]]] = [
        ("as is", torch.arange(corr.shape[0]), ())
    ]
    if order is not None:
        perm = order.permutation if isinstance(order, Partition) else order
        blocks = order.blocks.get(group, ()) if isinstance(order, Partition) else ()
        panels.append(("partitioned" if blocks else "reorganized", perm[group], blocks))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.8, 4.4), squeeze=False)
    for ax, (label, index, blocks) in zip(axes[0], panels, strict=True):
        image = ax.imshow(
            corr[index][:, index].numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        for block in blocks:
            size = block.stop - block.start
            corner = (block.start - 0.5, block.start - 0.5)
            ax.add_patch(plt.Rectangle(corner, size, size, fill=False, lw=1.2, ec="black"))
        ax.set(xlabel="unit", ylabel="unit")
        ax.set_title(f"{label}: diagonality {diagonality(corr, index):.2f}", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046, pad=0.04, label="correlation")
    fig.suptitle(title or group, fontsize=11)
    return save_figure(fig, path, dpi=120)
