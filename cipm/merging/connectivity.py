"""`cipm.barrier`: loss and error along the straight line between two models.

As in the simultaneous-connectivity experiments (seed 000): for theta(a) = (1 - a) theta_A
+ a theta_B, the loss barrier is max over a of L(theta(a)) - ((1 - a) L(theta_A) + a L(theta_B)),
and the error barrier the same for the error rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cipm.batches import Loss, as_args, batch_list
from cipm.errors import CipmError
from cipm.io import figure, save_figure
from cipm.merging.average import interpolate

__all__ = ["BarrierCurve", "barrier", "plot_barriers"]


@dataclass(frozen=True)
class BarrierCurve:
    """Mean loss and error rate at each interpolation weight `alphas[i]`."""

    alphas: tuple[float, ...]
    losses: tuple[float, ...]
    errors: tuple[float, ...]

    @property
    def loss_barrier(self) -> float:
        return _barrier(self.alphas, self.losses)

    @property
    def error_barrier(self) -> float:
        return _barrier(self.alphas, self.errors)

    def __str__(self) -> str:
        rows = [f"{'alpha':>6}  {'loss':>9}  {'error':>7}"]
        rows += [
            f"{a:6.2f}  {lo:9.4f}  {e:7.2%}" for a, lo, e in zip(*self._columns(), strict=True)
        ]
        rows.append(f"loss barrier {self.loss_barrier:.4f}, error barrier {self.error_barrier:.2%}")
        return "\n".join(rows)

    def _columns(self) -> tuple[tuple[float, ...], ...]:
        return self.alphas, self.losses, self.errors

    def plot(self, path: str | os.PathLike[str], title: str = "") -> Path:
        """Write loss and error against alpha as a PNG (atomically)."""
        fig = figure(figsize=(9, 3.5))
        ax_loss, ax_err = fig.subplots(1, 2)
        ax_loss.plot(self.alphas, self.losses, marker="o")
        ax_loss.set(xlabel="alpha (A = 0, B = 1)", ylabel="loss", title="loss")
        ax_err.plot(self.alphas, [100 * e for e in self.errors], marker="o", color="tab:red")
        ax_err.set(xlabel="alpha (A = 0, B = 1)", ylabel="error (%)", title="error")
        fig.suptitle(title or f"loss barrier {self.loss_barrier:.3f}")
        fig.tight_layout()
        return save_figure(fig, path, dpi=120)


def plot_barriers(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    labels: tuple[str, str],
    title: str = "",
    log_x: bool = False,
) -> Path:
    """Barriers of several alignments against one swept quantity (training epochs, pruning
    level, width): a line per series, written as a PNG (atomically). `labels` are the x and
    y axes' (``("epoch", "test loss barrier")``). With `log_x`, the x axis is logarithmic and
    ticked at the values of `x`."""
    fig = figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for label, values in series.items():
        ax.plot(x, values, marker="o", ms=3, label=label)
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def barrier(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    data: Iterable[tuple[Any, torch.Tensor]],
    *,
    loss: Loss = F.cross_entropy,
    steps: int = 11,
    reset_data: Iterable[Any] | None = None,
) -> BarrierCurve:
    """Loss and error rate of the interpolated models at `steps` evenly spaced alphas.

    Args:
        data: (inputs, targets) batches; error counts argmax(outputs) != targets.
        loss: mean loss of a batch (default cross-entropy).
        reset_data: batches to recompute BatchNorm statistics of each interpolated model on
            (interpolating them is wrong otherwise); ignored without BatchNorm.

    Raises:
        CipmError: fewer than 2 steps or no batches.
    """
    if steps < 2:
        raise CipmError(f"a barrier needs at least 2 steps, got {steps}")
    batches = batch_list(data, "barrier")
    alphas = tuple(i / (steps - 1) for i in range(steps))
    losses, errors = [], []
    for alpha in alphas:
        model = interpolate(model_a, model_b, alpha, data=reset_data).eval()
        total_loss = total_wrong = count = 0.0
        with torch.no_grad():
            for inputs, targets in batches:
                args, kwargs = as_args(inputs)
                out = model(*args, **kwargs)
                total_loss += float(loss(out, targets)) * len(targets)
                total_wrong += float((out.argmax(-1) != targets).sum())
                count += len(targets)
        losses.append(total_loss / count)
        errors.append(total_wrong / count)
    return BarrierCurve(alphas, tuple(losses), tuple(errors))


def _barrier(alphas: tuple[float, ...], values: tuple[float, ...]) -> float:
    start, end = values[0], values[-1]
    return max(v - ((1 - a) * start + a * end) for a, v in zip(alphas, values, strict=True))
