"""Seed experiment (a): loss barriers between two independently trained networks, before and
after weight and activation matching (Git Re-Basin's table, at digits scale).

    python examples/seed_barriers.py [--epochs 15] [--out docs/img/seed_barriers.png]

Trains two copies of each architecture on scikit-learn's digits from different seeds, aligns
B to A with cipm (no spec written for any of them), and measures the test loss and error
along the straight line between A and B. BatchNorm statistics of every interpolated model are
recomputed on training data (averaging them is wrong otherwise). Prints a table and writes a
plot of the curves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.catalog import BasicBlock
from cipm.examples.data import digits, train_classifier
from cipm.io import figure, save_figure


def conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


ARCHITECTURES = {
    "MLP 3x256": (False, lambda: catalog.mlp(depth=3, width=256, d_in=64, d_out=10)[0]),
    "VGG-style CNN": (
        True,
        lambda: nn.Sequential(
            *conv(1, 32),
            *conv(32, 32),
            nn.MaxPool2d(2),
            *conv(32, 64),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        ),
    ),
    "ResNet-style CNN": (
        True,
        lambda: nn.Sequential(
            *conv(1, 32),
            BasicBlock(32, 32, 1),
            BasicBlock(32, 64, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        ),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("out/seed_barriers.png"))
    args = parser.parse_args()
    results = {}
    for name, (image, make) in ARCHITECTURES.items():
        train, test = digits(image=image)
        models = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            models.append(train_classifier(make(), train, epochs=args.epochs, seed=seed))
        a, b = models
        graph = cipm.trace(a, train[0][0])
        calibration = [x for x, _ in train[:8]]
        reset = calibration if any(isinstance(m, nn.BatchNorm2d) for m in a.modules()) else None
        candidates = {
            "none": b,
            "weight matching": cipm.permute(b, cipm.align(a, b, graph)),
            "activation matching": cipm.permute(
                b, cipm.align(a, b, graph, method="activation", data=calibration)
            ),
        }
        results[name] = {
            method: cipm.barrier(a, other, test, reset_data=reset)
            for method, other in candidates.items()
        }
        print(f"{name}: {len(graph)} groups found ({', '.join(g.name for g in graph)})")
    print(
        f"\n{'model':18s}  {'alignment':20s}  {'loss barrier':>12s}  {'error barrier':>13s}"
        f"  {'test error A / B':>16s}"
    )
    for name, curves in results.items():
        for method, curve in curves.items():
            ends = f"{curve.errors[0]:.1%} / {curve.errors[-1]:.1%}"
            print(
                f"{name:18s}  {method:20s}  {curve.loss_barrier:12.4f}  "
                f"{curve.error_barrier:13.2%}  {ends:>16s}"
            )
    plot(results, args.out)
    print(f"\nwrote {args.out}")


def plot(results: dict[str, dict[str, cipm.BarrierCurve]], path: Path) -> None:
    fig = figure(figsize=(4.2 * len(results), 3.4))
    axes = fig.subplots(1, len(results))
    for ax, (name, curves) in zip(axes, results.items(), strict=True):
        for method, curve in curves.items():
            ax.plot(curve.alphas, curve.losses, marker="o", ms=3, label=method)
        ax.set(title=name, xlabel="alpha (A = 0, B = 1)", ylabel="test loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
