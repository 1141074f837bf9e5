"""Seed experiment (c): simultaneous connectivity along iterative-magnitude-pruning levels.

    python examples/pruning_levels.py [--levels 6] [--out docs/img/pruning_levels.png]

Two MLPs on digits (seeds 1 and 2) go through iterative magnitude pruning: train, remove the
20 % smallest remaining weights of every layer, rewind the survivors to their initial values,
train again. The permutation found between the two sparsest networks is then applied to
every earlier level of B, and compared with aligning each level's pair on its own. Prints a
table and plots barrier against sparsity.
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


def masked_training(
    model: nn.Module, masks: dict[str, torch.Tensor], data: list, seed: int, epochs: int
) -> nn.Module:
    """Train with pruned weights held at zero (re-applied after every epoch)."""
    for epoch in range(epochs):
        train_classifier(model, data, epochs=1, seed=seed * 100 + epoch)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in masks:
                    p.mul_(masks[name])
    return model.eval()


def levels(data: list, seed: int, count: int, epochs: int) -> list[nn.Module]:
    """The trained network at each pruning level (20 % fewer weights each time)."""
    torch.manual_seed(seed)
    init = catalog.mlp(depth=3, width=256, d_in=64, d_out=10)[0]
    masks = {n: torch.ones_like(p) for n, p in init.named_parameters() if p.dim() == 2}
    out = []
    for _ in range(count):
        model = masked_training(copy.deepcopy(init), masks, data, seed, epochs)
        out.append(model)
        for name, p in model.named_parameters():  # prune 20 % of what survives, per layer
            if name in masks:
                alive = p.detach().abs()[masks[name].bool()]
                cut = alive.kthvalue(max(1, int(0.2 * alive.numel()))).values
                masks[name] = masks[name] * (p.detach().abs() > cut)
        with torch.no_grad():  # rewind the survivors to their initial values
            for name, p in init.named_parameters():
                if name in masks:
                    p.mul_(masks[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("out/pruning_levels.png"))
    args = parser.parse_args()
    train, test = digits()
    path_a = levels(train, 1, args.levels, args.epochs)
    path_b = levels(train, 2, args.levels, args.epochs)
    graph = cipm.trace(path_a[0], train[0][0])
    final = cipm.align(path_a[-1], path_b[-1], graph)
    rows = []
    for level, (a, b) in enumerate(zip(path_a, path_b, strict=True)):
        own = cipm.align(a, b, graph)
        barriers = [
            cipm.barrier(a, m, test).loss_barrier
            for m in (b, cipm.permute(b, final), cipm.permute(b, own))
        ]
        rows.append((level, 1 - 0.8**level, *barriers))
    print(f"{'level':>5s}  {'sparsity':>8s}  {'unaligned':>9s}  {'final P':>9s}  {'own P':>9s}")
    for level, sparsity, *barriers in rows:
        print(f"{level:5d}  {sparsity:8.0%}  " + "  ".join(f"{v:9.4f}" for v in barriers))
    labels = ("unaligned", "sparsest level's permutation", "each level's own permutation")
    cipm.plot_barriers(
        [100 * r[1] for r in rows],
        {label: [r[2 + i] for r in rows] for i, label in enumerate(labels)},
        args.out,
        labels=("weights pruned (%)", "test loss barrier A-B"),
        title="pruning levels on digits (3x256 MLP)",
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
