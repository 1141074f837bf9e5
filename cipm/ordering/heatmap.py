"""Heatmaps of a group's unit correlations, as they are and reorganized or partitioned."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cipm.graph.symmetry import Permutation
from cipm.io import figure, save_figure
from cipm.ordering.blocks import Partition
from cipm.ordering.seriation import diagonality
from cipm.statistics.group import Statistics

__all__ = ["plot_correlation"]


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
    from matplotlib.patches import Rectangle

    corr = stats[group].corr
    panels: list[tuple[str, torch.Tensor, tuple[range, ...]]] = [
        ("as is", torch.arange(corr.shape[0]), ())
    ]
    if order is not None:
        perm = order.permutation if isinstance(order, Partition) else order
        blocks = order.blocks.get(group, ()) if isinstance(order, Partition) else ()
        panels.append(("partitioned" if blocks else "reorganized", perm[group], blocks))
    fig = figure(figsize=(4.6 * len(panels) + 0.8, 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, index, blocks) in zip(axes[0], panels, strict=True):
        image = ax.imshow(
            corr[index][:, index].numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        for block in blocks:
            size = block.stop - block.start
            corner = (block.start - 0.5, block.start - 0.5)
            ax.add_patch(Rectangle(corner, size, size, fill=False, lw=1.2, ec="black"))
        ax.set(xlabel="unit", ylabel="unit")
        ax.set_title(f"{label}: diagonality {diagonality(corr, index):.2f}", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046, pad=0.04, label="correlation")
    fig.suptitle(title or group, fontsize=11)
    return save_figure(fig, path, dpi=120)
