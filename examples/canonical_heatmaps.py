"""Canonicalize a trained model, then reorganize and partition its units by correlation.

    python examples/canonical_heatmaps.py [--epochs 15] [--out docs/img/heatmaps]

A CNN and an MLP are trained on scikit-learn's digits. Each is put in canonical form, and a
randomly permuted copy is too, to show that both land on the very same tensors. Then the
canonical model's unit correlations are collected on the training data, every group is
seriated (spectral and optimal-leaf-ordering) and cut into four blocks; a table gives each
group's diagonality before and after and the blocks' normalized cut, and one PNG per group
shows its correlation heatmap as is and partitioned.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import cipm
from cipm.examples.data import digits, digits_cnn, train_classifier


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def same_tensors(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def study(name: str, make: Callable[[], nn.Module], image: bool, epochs: int, out: Path) -> None:
    train, _ = digits(image=image)
    torch.manual_seed(0)  # the initialization
    model = train_classifier(make(), train, epochs=epochs, seed=0)
    graph = cipm.trace(model, train[0][0])
    canon = cipm.canonicalize(model, graph)
    shuffled = cipm.permute(model, graph.random_permutation(seed=1))
    print(f"\n{name}: {len(graph)} groups")
    print(f"  a permuted copy canonicalizes to the same tensors: "
          f"{same_tensors(cipm.canonicalize(shuffled, graph), canon)}")  # fmt: skip
    stats = cipm.collect(canon, graph, train, config=cipm.CollectConfig(progress=False))
    spectral = cipm.reorganize(canon, stats, method="spectral")
    olo = cipm.reorganize(canon, stats, method="olo")
    parts = cipm.partition(canon, stats, k=4)
    print(f"  {'group':<12}{'units':>6}{'canonical':>11}{'spectral':>10}{'olo':>8}"
          f"{'4 blocks':>22}{'ncut':>7}")  # fmt: skip
    for group in graph:
        corr = stats[group.name].corr
        sizes = "/".join(str(len(b)) for b in parts.blocks.get(group.name, ()))
        print(
            f"  {group.name:<12}{group.size:>6}{cipm.diagonality(corr):>11.2f}"
            f"{cipm.diagonality(corr, spectral[group.name]):>10.2f}"
            f"{cipm.diagonality(corr, olo[group.name]):>8.2f}"
            f"{sizes:>22}{parts.cut.get(group.name, float('nan')):>7.2f}"
        )
        path = out / f"{name}_{group.name.replace(':', '_').replace('.', '_')}.png"
        cipm.plot_correlation(
            stats, group.name, path, order=parts, title=f"{name} {group.name} (canonical model)"
        )
    print(f"  heatmaps in {out}/{name}_*.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("out/heatmaps"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    study("mlp", mlp, image=False, epochs=args.epochs, out=args.out)
    study("cnn", digits_cnn, image=True, epochs=args.epochs, out=args.out)


if __name__ == "__main__":
    main()
