"""Transfer in a block of task-relevant units (seed 002 section 4.3): reorganize a model
trained on digits 0-4 so the units relevant to the new task (digits 5-9) come first, and
fine-tune only that block, against a random block of the same size and full fine-tuning.

    python examples/transfer_blocks.py [--seeds 5] [--steps 100] [--out out/transfer_blocks.png]

Every model is an MLP (two hidden layers of 64) trained on digits 0-4, whose output layer is
then trained alone on digits 5-9 (a linear probe: the "output layer only" row). A unit's
relevance is the exact masking relevance (`cipm.meta.relevance.unit_relevance`: the output
change when that unit alone is zeroed, on the 5-9 training inputs). The orders compared:

- exact relevance: the units sorted by that relevance (one forward pass per unit);
- learned: a meta-analysis network trained here for the ``relevance`` objective alone
  (`--steps` steps on 6 other models: other seeds, widths 32/64/96), which ranks units from
  their statistics on the 5-9 inputs, with no masking pass;
- pretrained network: `cipm.MetaAnalyzer.pretrained()`'s policy (trained for compression,
  correlation and stability, not relevance);
- least relevant (the exact order reversed) and a random order.

Each order is applied with `cipm.permute` (the same function), `cipm.split_order` cuts its
first units into block 0 of every hidden layer, and the block (`Partition.block_masks(0)`:
its rows, biases and the next layer's columns) is fine-tuned with the output layer; all else
stays bit-identical. Held-out models are seeds 0..seeds-1; the meta-network never saw them.
Prints two markdown tables (mean ± sd over seeds) and writes a plot.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import cipm
from cipm.examples.data import Batches, accuracy, digits, digits_mlp, of_classes, train_classifier
from cipm.meta import MetaConfig, Subject
from cipm.meta.analyzer import MetaAnalyzer
from cipm.meta.relevance import relevance_order, relevance_score, unit_relevance

SOURCE, TARGET = range(0, 5), range(5, 10)
HEAD = "4"  # the output layer of cipm.examples.data.digits_mlp
FRACTIONS = (1 / 64, 1 / 16, 1 / 4)
ORDERS = (
    "exact relevance",
    "learned (relevance objective)",
    "pretrained network",
    "least relevant",
    "random",
)
LR, EPOCHS = 3e-3, 15


def tasks(seed: int = 0) -> dict[str, Batches]:
    train, test = digits(seed=seed)
    return {
        "source": of_classes(train, SOURCE),
        "train": of_classes(train, TARGET),
        "test": of_classes(test, TARGET),
    }


def head_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: torch.ones_like(p, dtype=torch.bool)
        for n, p in model.named_parameters()
        if n.startswith(f"{HEAD}.")
    }


def probed(data: Mapping[str, Batches], seed: int, width: int = 64) -> Subject:
    """A model trained on the source task, its output layer then trained on the target, as a
    meta-network `Subject`: statistics and calibration on the target's training inputs."""
    torch.manual_seed(seed)
    model = train_classifier(digits_mlp(width), data["source"], epochs=EPOCHS, seed=seed)
    train_classifier(
        model, data["train"], epochs=EPOCHS, seed=seed, lr=LR, trainable=head_masks(model)
    )
    inputs = [x for x, _ in data["train"]]
    graph = cipm.trace(model, inputs[0])
    stats = cipm.collect(model, graph, inputs, config=cipm.CollectConfig(progress=False))
    return Subject(f"seed{seed}-w{width}", model, stats, calibration=[torch.cat(inputs)])


def learned_network(data: Mapping[str, Batches], steps: int) -> MetaAnalyzer:
    """A small meta-network fitted for relevance on 6 models no row is measured on."""
    zoo = [probed(data, 100 + i, w) for i, w in enumerate((32, 64, 96, 32, 64, 96))]
    meta = MetaAnalyzer(MetaConfig(hidden=16, layers=2), seed=0)
    meta.fit(
        zoo, {"relevance": 1.0}, config=cipm.meta.FitConfig(steps=steps, batch=2, progress=False)
    )
    return meta


def orders(
    s: Subject, relevance: Mapping[str, torch.Tensor], meta: MetaAnalyzer, seed: int
) -> dict[str, cipm.Permutation]:
    graph = s.stats.graph
    exact = relevance_order(graph, dict(relevance))
    return {
        "exact relevance": exact,
        "learned (relevance objective)": meta.policy(s.model, s.stats),
        "pretrained network": MetaAnalyzer.pretrained().policy(s.model, s.stats),
        "least relevant": cipm.Permutation(graph, {g: exact[g].flip(0) for g in exact}),
        "random": graph.random_permutation(seed=seed),
    }


def fine_tune(
    s: Subject, data: Mapping[str, Batches], order: cipm.Permutation | None, fraction: float
) -> tuple[float, int]:
    """Target accuracy and parameters trained: the first `fraction` of `order` and the
    output layer (`order` None: every parameter)."""
    if order is None:
        model = cipm.permute(s.model, s.stats.graph.identity())
        masks = None
        trained = sum(p.numel() for p in model.parameters())
    else:
        parts = cipm.split_order(s.model, s.stats, order, fraction)
        model = cipm.permute(s.model, parts.permutation)
        masks = {**parts.block_masks(0), **head_masks(model)}
        trained = sum(int(m.sum()) for m in masks.values())
    train_classifier(model, data["train"], epochs=EPOCHS, seed=0, lr=LR, trainable=masks)
    return accuracy(model, data["test"]), trained


def run(seeds: int, steps: int) -> tuple[dict[str, list[float]], dict[tuple, list[tuple]]]:
    """Relevance objective per order, and (accuracy, params) per (method, fraction)."""
    data = tasks()
    meta = learned_network(data, steps)
    objective: dict[str, list[float]] = {}
    results: dict[tuple, list[tuple]] = {}
    for seed in range(seeds):
        s = probed(data, seed)
        relevance = unit_relevance(s.model, s.stats.graph, s.calibration[0])
        head = sum(int(m.sum()) for m in head_masks(s.model).values())
        results.setdefault(("output layer only", 0.0), []).append(
            (accuracy(s.model, data["test"]), head)
        )
        for name, order in orders(s, relevance, meta, seed).items():
            objective.setdefault(name, []).append(relevance_score(dict(relevance), order))
            for fraction in FRACTIONS:
                results.setdefault((name, fraction), []).append(fine_tune(s, data, order, fraction))
        results.setdefault(("full fine-tuning", 1.0), []).append(fine_tune(s, data, None, 1.0))
    return objective, results


def _pm(values: Sequence[float], digits: int = 3) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def tables(objective: Mapping[str, list[float]], results: Mapping[tuple, list[tuple]]) -> str:
    seeds = len(next(iter(objective.values())))
    lines = [
        f"| order (held-out models, {seeds} seeds) | relevance objective (1: random, lower: "
        "relevant units first) |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {_pm(values)} |" for name, values in objective.items()]
    base = results[("output layer only", 0.0)]
    head_acc, head_params = statistics.fmean(a for a, _ in base), base[0][1]
    lines += [
        "",
        f"| fine-tuned (mean ± sd, {seeds} seeds) | block units per layer | params trained | "
        "accuracy on 5-9 | accuracy per 1k params | gain over output layer per 1k extra |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (name, fraction), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        acc, params = statistics.fmean(a for a, _ in rows), rows[0][1]
        units = {0.0: "0", 1.0: "all"}.get(fraction, str(round(fraction * 64)))
        extra = params - head_params
        gain = f"{(acc - head_acc) * 1e3 / extra:+.4f}" if extra else ""
        lines.append(
            f"| {name} | {units} | {params:,} | {_pm([a for a, _ in rows])} | "
            f"{acc * 1e3 / params:.3f} | {gain} |"
        )
    return "\n".join(lines)


def plot(results: Mapping[tuple, list[tuple]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in ORDERS:
        points = [(results[(name, f)][0][1], results[(name, f)]) for f in FRACTIONS]
        ax.errorbar(
            [p for p, _ in points],
            [statistics.fmean(a for a, _ in rows) for _, rows in points],
            yerr=[statistics.pstdev([a for a, _ in rows]) for _, rows in points],
            marker="o",
            capsize=3,
            label=name,
        )
    for name, marker in (("output layer only", "s"), ("full fine-tuning", "D")):
        (key,) = [k for k in results if k[0] == name]
        acc = [a for a, _ in results[key]]
        ax.plot([results[key][0][1]], [statistics.fmean(acc)], marker, color="k", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("parameters trained")
    ax.set_ylabel("test accuracy on digits 5-9")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="meta-network training steps")
    parser.add_argument("--out", type=Path, default=Path("out/transfer_blocks.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # deterministic and quick at this size
    objective, results = run(args.seeds, args.steps)
    text = tables(objective, results)
    print(text)
    plot(results, args.out)
    print(f"\nplot: {args.out}")
    return text


if __name__ == "__main__":
    main()
