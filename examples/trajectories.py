"""Seed experiment (b): simultaneous weak connectivity along training trajectories.

    python examples/trajectories.py [--epochs 12] [--out docs/img/trajectories.png]

Trains two MLPs on digits from different seeds, keeping a checkpoint after every epoch. The
permutation found between the two *final* networks is then applied to every earlier
checkpoint of B: if it also aligns the pairs (A_t, B_t) along the way, the trajectories are
connected simultaneously, not just their end points. Compared with aligning each pair on its
own and with no alignment. Prints a table and plots barrier against epoch.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import digits, train_classifier


def mlp() -> nn.Module:
    return catalog.mlp(depth=3, width=256, d_in=64, d_out=10)[0]


def trajectory(data: list, epochs: int, seed: int) -> list[nn.Module]:
    """Checkpoints after each epoch (index 0: the initialization)."""
    torch.manual_seed(seed)
    model = mlp()
    checkpoints = [copy.deepcopy(model).eval()]
    for epoch in range(epochs):
        train_classifier(model, data, epochs=1, seed=seed * 1000 + epoch)
        checkpoints.append(copy.deepcopy(model).eval())
    return checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("out/trajectories.png"))
    args = parser.parse_args()
    train, test = digits()
    path_a, path_b = trajectory(train, args.epochs, 1), trajectory(train, args.epochs, 2)
    graph = cipm.trace(path_a[-1], train[0][0])
    final = cipm.align(path_a[-1], path_b[-1], graph)
    rows = []
    for epoch, (a, b) in enumerate(zip(path_a, path_b, strict=True)):
        own = cipm.align(a, b, graph)
        barriers = [
            cipm.barrier(a, m, test).loss_barrier
            for m in (b, cipm.permute(b, final), cipm.permute(b, own))
        ]
        rows.append((epoch, *barriers))
    print(f"{'epoch':>5s}  {'unaligned':>9s}  {'final P':>9s}  {'own P':>9s}")
    for epoch, *barriers in rows:
        print(f"{epoch:5d}  " + "  ".join(f"{v:9.4f}" for v in barriers))
    labels = ("unaligned", "final permutation (found at the end)", "each epoch's own permutation")
    cipm.plot_barriers(
        [r[0] for r in rows],
        {label: [r[1 + i] for r in rows] for i, label in enumerate(labels)},
        args.out,
        labels=("epoch", "test loss barrier A_t-B_t"),
        title="trajectories on digits (3x256 MLP)",
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
