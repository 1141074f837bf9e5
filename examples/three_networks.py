"""Seed experiment (d): two networks aligned through a third, against width.

    python examples/three_networks.py [--epochs 10] [--out docs/img/three_networks.png]

For MLPs of 1x to 8x a base width on digits, trains A, B and C from three seeds, and measures
the test loss barrier between A and B: unaligned, aligned directly (B to A), and aligned only
through C (B to C, then C's order to A: B and A never meet, as two federated clients that
only share a reference model). Prints a table and plots barrier against width.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import digits, train_classifier

BASE = 32


def mlp(width: int) -> nn.Module:
    return catalog.mlp(depth=3, width=width, d_in=64, d_out=10)[0]


def trained(width: int, data: list, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the initialization differs per seed too
    return train_classifier(mlp(width), data, epochs=epochs, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("out/three_networks.png"))
    args = parser.parse_args()
    train, test = digits()
    rows = []
    for factor in (1, 2, 4, 8):
        width = BASE * factor
        a, b, c = (trained(width, train, args.epochs, seed) for seed in (1, 2, 3))
        graph = cipm.trace(a, train[0][0])
        direct = cipm.permute(b, cipm.align(a, b, graph))
        indirect = cipm.permute(b, cipm.align(a, b, graph, via=c))
        barriers = [cipm.barrier(a, m, test).loss_barrier for m in (b, direct, indirect)]
        rows.append((factor, width, *barriers))
    print(f"{'width':>9s}  {'unaligned':>9s}  {'direct':>9s}  {'via C':>9s}")
    for factor, width, *barriers in rows:
        print(f"{width:5d} ({factor}x)  " + "  ".join(f"{v:9.4f}" for v in barriers))
    labels = ("unaligned", "aligned directly", "aligned through C")
    cipm.plot_barriers(
        [r[1] for r in rows],
        {label: [r[2 + i] for r in rows] for i, label in enumerate(labels)},
        args.out,
        labels=("hidden width", "test loss barrier A-B"),
        title="three networks on digits (3-layer MLP)",
        log_x=True,
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
