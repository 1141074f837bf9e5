"""Continual learning in task blocks (seed 002 section 4.4): learn digits 5-9 (task B) in a
block of units a model trained on digits 0-4 (task A) is partitioned into, and measure how
much of task A it forgets, against naive fine-tuning of every weight.

    python examples/continual_blocks.py [--seeds 5] [--width 64] [--out out/continual_blocks.png]

An MLP (two hidden layers) is trained on task A. Each hidden layer's units are split into an
A block and a B block, and B is trained (same epochs, same learning rate) only on its block's
own pathway (`Partition.block_masks(1, isolated=True)`: first-layer rows of B's units, the
second layer's weights from B's units to B's units, and the output layer's columns of B's
second-layer units); every other weight stays bit-identical. The splits:

- least A-relevant half: units ordered by exact masking relevance to the output on A's data
  (`cipm.meta.relevance.unit_relevance`), B gets the less relevant half;
- correlation blocks: `cipm.partition(k=2)` on A's data, B gets the block with less A
  relevance (blocks of the sizes the normalized cut chose);
- random half;
- naive: every weight trained on B.

Prints a markdown table (mean ± sd over seeds) and writes a bar plot.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping
from pathlib import Path

import torch

import cipm
from cipm.examples.data import Batches, accuracy, digits, digits_mlp, of_classes, train_classifier
from cipm.meta.relevance import relevance_order, unit_relevance

TASK_A, TASK_B = range(0, 5), range(5, 10)
METHODS = ("naive fine-tuning", "least A-relevant half", "correlation blocks", "random half")


def tasks(seed: int = 0) -> dict[str, Batches]:
    """Train and test batches of each task (digits 0-4 and 5-9)."""
    train, test = digits(seed=seed)
    return {
        "a_train": of_classes(train, TASK_A),
        "a_test": of_classes(test, TASK_A),
        "b_train": of_classes(train, TASK_B),
        "b_test": of_classes(test, TASK_B),
    }


def b_partition(
    model: torch.nn.Module, graph: cipm.SymmetryGraph, data: Batches, method: str, seed: int
) -> cipm.Partition:
    """Two blocks per hidden group; block 1 is task B's."""
    stats = cipm.collect(
        model, graph, [x for x, _ in data], config=cipm.CollectConfig(progress=False)
    )
    relevance = unit_relevance(model, graph, torch.cat([x for x, _ in data]))
    if method == "least A-relevant half":
        return cipm.split_order(model, stats, relevance_order(graph, relevance), 0.5)
    if method == "random half":
        return cipm.split_order(model, stats, graph.random_permutation(seed=seed), 0.5)
    if method != "correlation blocks":
        raise cipm.CipmError(f"unknown split {method!r}")
    parts = cipm.partition(model, stats, k=2)
    order, blocks = {}, {}
    for g, (first, second) in parts.blocks.items():
        seq = parts.permutation[g]
        mass = [float(relevance[g][seq[b.start : b.stop]].sum()) for b in (first, second)]
        if mass[1] > mass[0]:  # the less relevant block goes second, to B
            seq = torch.cat([seq[second.start :], seq[: second.start]])
            first, second = range(0, len(second)), range(len(second), len(seq))
        order[g], blocks[g] = seq, (first, second)
    perm = cipm.Permutation(graph, {g.name: order.get(g.name, torch.arange(g.size)) for g in graph})
    return cipm.Partition(perm, blocks, parts.cut, parts.shapes)


def run_seed(
    seed: int, data: Mapping[str, Batches], width: int, epochs: int
) -> dict[str, dict[str, float]]:
    """Per method: A accuracy before and after learning B, B accuracy, trained params."""
    torch.manual_seed(seed)
    model = train_classifier(digits_mlp(width), data["a_train"], epochs=epochs, seed=seed)
    graph = cipm.trace(model, data["a_train"][0][0])
    before = accuracy(model, data["a_test"])
    aware_before = accuracy(model, data["a_test"], TASK_A)
    rows = {}
    for method in METHODS:
        if method == "naive fine-tuning":
            learner, masks = cipm.permute(model, graph.identity()), None
            trained = sum(p.numel() for p in learner.parameters())
        else:
            parts = b_partition(model, graph, data["a_train"], method, seed)
            learner = cipm.permute(model, parts.permutation)
            masks = parts.block_masks(1, isolated=True)
            trained = sum(int(m.sum()) for m in masks.values())
        train_classifier(learner, data["b_train"], epochs=epochs, seed=seed, trainable=masks)
        after = accuracy(learner, data["a_test"])
        aware = accuracy(learner, data["a_test"], TASK_A)
        rows[method] = {
            "a_before": before,
            "a_after": after,
            "forgetting": before - after,
            "aware_forgetting": aware_before - aware,
            "b": accuracy(learner, data["b_test"]),
            "params": float(trained),
        }
    return rows


def summarize(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of every figure."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in runs[0]:
        out[method] = {}
        for key in runs[0][method]:
            values = [r[method][key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out[method][key] = (statistics.fmean(values), sd)
    return out


def table(summary: Mapping[str, Mapping[str, tuple[float, float]]], seeds: int) -> str:
    def pm(v: tuple[float, float]) -> str:
        return f"{v[0]:.3f} ± {v[1]:.3f}"

    lines = [
        f"| training task B (mean ± sd, {seeds} seeds) | params trained | A before | "
        "A after | forgetting of A | forgetting of A, task known | B accuracy | "
        "mean of A and B |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, s in summary.items():
        mean_ab = (s["a_after"][0] + s["b"][0]) / 2
        lines.append(
            f"| {method} | {s['params'][0]:,.0f} | {pm(s['a_before'])} | {pm(s['a_after'])} | "
            f"{pm(s['forgetting'])} | {pm(s['aware_forgetting'])} | {pm(s['b'])} | "
            f"{mean_ab:.3f} |"
        )
    return "\n".join(lines)


def plot(summary: Mapping[str, Mapping[str, tuple[float, float]]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(summary)
    xs = range(len(names))
    for offset, key, label in ((-0.2, "a_after", "task A after B"), (0.2, "b", "task B")):
        ax.bar(
            [x + offset for x in xs],
            [summary[n][key][0] for n in names],
            0.4,
            yerr=[summary[n][key][1] for n in names],
            label=label,
        )
    ax.axhline(summary[names[0]]["a_before"][0], color="k", ls=":", label="task A before B")
    ax.set_xticks(list(xs), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("out/continual_blocks.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # deterministic and quick at this size
    data = tasks()
    runs = [run_seed(seed, data, args.width, args.epochs) for seed in range(args.seeds)]
    summary = summarize(runs)
    text = table(summary, args.seeds)
    print(text)
    plot(summary, args.out)
    print(f"\nplot: {args.out}")
    return text


if __name__ == "__main__":
    main()
