"""Structured pruning of a small CNN on digits: half its channels gone, no retraining.

    python examples/prune_digits.py [--epochs 10] [--ratio 0.5]

A CNN is trained on scikit-learn's 8x8 digits, traced, and pruned by each method at the given
fraction of every conv's channels. Prints test accuracy, parameter count and the layers of
the smaller model (same class, layers resized), which is an ordinary model: it is saved and
loaded back at the end.
"""

from __future__ import annotations

import argparse
import io

import torch
from torch import nn

import cipm
from cipm.examples.data import digits, digits_cnn, train_classifier


def accuracy(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    return right / sum(len(y) for _, y in data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    train, test = digits(image=True)
    torch.manual_seed(0)
    model = train_classifier(digits_cnn(), train, epochs=args.epochs, seed=0)
    graph = cipm.trace(model, train[0][0])
    stats = cipm.collect(model, graph, train, config=cipm.CollectConfig(progress=False))
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"original: accuracy {accuracy(model, test):.3f}, {size(model):,} parameters")
    pruned = {
        "merge, group by group on data": cipm.prune(
            model, stats, ratio=args.ratio, data=train, config=cipm.PruneConfig(progress=False)
        ).model,
        "merge, all at once from stats": cipm.prune(model, stats, ratio=args.ratio).model,
        "activation": cipm.prune(model, stats, ratio=args.ratio, method="activation").model,
        "magnitude": cipm.prune(model, graph, ratio=args.ratio, method="magnitude").model,
    }
    for method, small in pruned.items():
        print(f"{method:>30}: accuracy {accuracy(small, test):.3f}, {size(small):,} parameters")
    best = pruned["merge, group by group on data"]
    print(f"\nthe merged model, {args.ratio:.0%} of channels removed:\n{best}")
    buffer = io.BytesIO()
    torch.save(best, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    print(f"saved and loaded: accuracy {accuracy(loaded, test):.3f}")


if __name__ == "__main__":
    main()
