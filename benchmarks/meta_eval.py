"""Learned against analytic, side by side (issue 15): every table in one run.

1. Alignment at scale and cost (`benchmarks/meta_scale.py`): learned co-canonicalization,
   its windowed refinement and weight matching warm-started from it, against weight
   matching, on MLP pairs trained here at widths 512-8192; policy inference against one
   assignment solve at widths 512-16384.
2. Pruning at 25/50/75 % without fine-tuning (`benchmarks/prune.py`'s cases: digits MLP and
   CNN, the real all-MiniLM-L6-v2): the pretrained network's keep with the merge fold,
   against cipm's analytic merge, magnitude and torch-pruning.
3. Held-out zoo models (other seeds, another width, the transformer family not trained
   on; `cipm.meta.evaluate`): pruning, stability, reorganization (diagonality of the learned
   order against optimal leaf ordering and spectral seriation) and the canonical form for
   interpretability (two models trained apart, each canonicalized alone: mean correlation of
   the units at equal positions; learned, analytic key, weight matching, as trained).
4. Ablations (seed 002 §7.3): networks trained from scratch for `--steps` steps on the zoo's
   training split, differing in one choice each (correlation measure, flat or hierarchical,
   weight features, objective weights), judged on the held-out-seed and -width splits:
   accuracy kept at 50 % pruning (learned keep + merge fold, as a share of the original),
   stability between calibration views, diagonality, canonical matching.

    python benchmarks/meta_eval.py [--zoo out/zoo] [--steps 300] [--skip scale,...]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import cipm
from cipm.meta.evaluate import disjoint_pairs, evaluate_pairs, evaluate_specimens, spearman, table
from cipm.meta.zoo import build_zoo, family_data, load_zoo
from cipm.meta.zoo.families import accuracy_on
from cipm.ordering.seriation import diagonality

SECTIONS = ("scale", "pruning", "heldout", "ablations")
PRETRAINED = {  # the objective weights cipm/meta/pretrained.safetensors was trained with
    "compression": 1.0,
    "correlation": 0.5,
    "stability": 0.1,
    "alignment": 0.5,
    "canonicalization": 0.1,
}


@dataclass(frozen=True)
class Variant:
    name: str
    config: cipm.MetaConfig
    objectives: Mapping[str, float]


VARIANTS = (
    Variant("as pretrained (pearson, hierarchical, weights)", cipm.MetaConfig(), PRETRAINED),
    Variant(
        "abs. covariance instead of pearson", cipm.MetaConfig(correlation="covariance"), PRETRAINED
    ),
    Variant("flat (each group's own graph)", cipm.MetaConfig(hierarchical=False), PRETRAINED),
    Variant("no weight features", cipm.MetaConfig(weight_features=False), PRETRAINED),
    Variant("lambda: compression only", cipm.MetaConfig(), {"compression": 1.0}),
    Variant(
        "lambda: no compression",
        cipm.MetaConfig(),
        {k: v for k, v in PRETRAINED.items() if k != "compression"},
    ),
)


PRUNING_METHODS = ("cipm learned", "cipm merge", "cipm magnitude", "torch-pruning")
Curves = dict[str, dict[str, dict[float, float]]]  # model -> method -> ratio -> score


def pruning_section(plot_path: str) -> None:
    import prune as bench  # benchmarks/prune.py, beside this script

    methods = PRUNING_METHODS
    cases = [
        lambda: bench.digits_case("digits MLP", image=False, epochs=15),
        lambda: bench.digits_case("digits CNN", image=True, epochs=15),
        lambda: bench.minilm_case(len(bench.SENTENCES)),
    ]
    curves: Curves = {}
    print(f"\n| model | ratio | {' | '.join(methods)} |")
    print(f"|---|---:|{'---:|' * len(methods)}")
    for make in cases:
        rows = bench.measure(make(), repeat=1, methods=methods)
        original = next(r.score for r in rows if r.method == "original")
        curve = curves.setdefault(rows[0].model, {m: {0.0: original} for m in methods})
        for ratio in bench.RATIOS:
            got = {r.method: r for r in rows if r.ratio == ratio}
            for m in methods:
                if not got[m].error:
                    curve[m][ratio] = got[m].score
            cells = [_cell(got[m]) for m in methods]
            best = max((got[m].score for m in methods if not got[m].error), default=None)
            cells = [f"**{c}**" if best is not None and c == f"{best:.4f}" else c for c in cells]
            print(f"| {rows[0].model} (orig. {original:.4f}) | {ratio:.0%} | {' | '.join(cells)} |")
    print(
        "\nscore: test accuracy (digits); mean cosine to the original's sentence embeddings on "
        "held-out sentences (MiniLM); nothing fine-tuned after pruning."
    )
    plot_pruning(curves, plot_path)
    print(f"plot: {plot_path}")


def _cell(row: Any) -> str:
    """A pruning table cell: the score, or why there is none."""
    if not row.error:
        return f"{row.score:.4f}"
    return "not installed" if "not installed" in row.error else "failed"


def plot_pruning(curves: Curves, path: str) -> None:
    """Score against pruning ratio, a panel per model, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (model, per_method) in zip(axes[0], curves.items(), strict=True):
        for method, points in per_method.items():
            ratios = sorted(points)
            ax.plot(ratios, [points[r] for r in ratios], marker="o", label=method)
        ax.set_title(model)
        ax.set_xlabel("fraction of units pruned")
        ax.set_xticks([0.0, 0.25, 0.5, 0.75])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (accuracy; MiniLM: cosine)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def heldout_section(zoo_folder: str) -> None:
    meta = cipm.MetaAnalyzer.pretrained()
    zoo = load_zoo(zoo_folder, ["heldout-seed", "heldout-width", "heldout-family"])
    test = {f: family_data(f)[1] for f in {s.spec.family for s in zoo}}
    rows = evaluate_specimens(meta, zoo, test, ratio=0.5)
    print(table(rows, evaluate_pairs(meta, disjoint_pairs(zoo)), 0.5))


def learned_only(meta: Any, zoo: Sequence[Any], test: Mapping[str, Any]) -> dict[str, float]:
    """A network's own figures on `zoo`: accuracy kept at 50 %, stability, diagonality,
    canonical matching (the columns of the ablation table)."""
    kept, stable, diagonal = [], [], []
    for s in zoo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cipm.CipmWarning)
            small = cipm.prune(s.model, s.stats, ratio=0.5, method=meta.prune_method()).model
        kept.append(accuracy_on(small, test[s.spec.family]) / s.accuracy)
        first, second = (meta.scores(s.model, v) for v in s.views[:2])
        stable.append(spearman(first, second))
        order = cipm.reorganize(s.model, s.stats, method=meta.seriation)
        values = [
            diagonality(s.stats[g].corr, order[g]) for g in s.stats if s.stats[g].group.size > 2
        ]
        diagonal.append(sum(values) / max(len(values), 1))
    pairs = evaluate_pairs(meta, disjoint_pairs(zoo))
    matched = [p.matched["learned"] for p in pairs]

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / max(len(xs), 1)

    return {
        "kept at 50 %": mean(kept),
        "stability": mean(stable),
        "diagonality": mean(diagonal),
        "canonical matching": mean(matched),
    }


def ablations_section(zoo_folder: str, steps: int) -> None:
    train = load_zoo(zoo_folder, "train")
    heldout = load_zoo(zoo_folder, ["heldout-seed", "heldout-width"])  # pairs: width 128
    test = {f: family_data(f)[1] for f in {s.spec.family for s in heldout}}
    columns = ("kept at 50 %", "stability", "diagonality", "canonical matching")
    print(f"\n| variant ({steps} steps, seed 0) | train s | {' | '.join(columns)} |")
    print(f"|---|---:|{'---:|' * len(columns)}")
    for v in VARIANTS:
        meta = cipm.MetaAnalyzer(v.config, seed=0)
        start = time.perf_counter()
        meta.fit(train, dict(v.objectives), config=cipm.meta.FitConfig(steps=steps, progress=False))
        seconds = time.perf_counter() - start
        got = learned_only(meta, heldout, test)
        cells = " | ".join(f"{got[c]:.3f}" for c in columns)
        print(f"| {v.name} | {seconds:.0f} | {cells} |", flush=True)
    print(
        "\nSpearman correlation as the within-group link is not a variant: it needs per-sample "
        "ranks, which the streamed moments cipm's statistics keep cannot give."
    )


def scale_section() -> None:
    import meta_scale  # benchmarks/meta_scale.py, beside this script

    meta_scale.main([])  # its tables and docs/img/meta_scale.png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="out/zoo")
    parser.add_argument("--steps", type=int, default=300, help="training steps per ablation")
    parser.add_argument("--pruning-plot", default="docs/img/meta_pruning.png")
    parser.add_argument("--skip", default="", help=f"comma-separated sections of {SECTIONS}")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    skip = {s for s in args.skip.split(",") if s}
    if not Path(args.zoo, "index.json").is_file():
        build_zoo(args.zoo)
    run = {
        "scale": scale_section,
        "pruning": lambda: pruning_section(args.pruning_plot),
        "heldout": lambda: heldout_section(args.zoo),
        "ablations": lambda: ablations_section(args.zoo, args.steps),
    }
    for number, name in enumerate(SECTIONS, 1):
        if name in skip:
            continue
        start = time.perf_counter()
        print(f"\n## {number}. {name}", flush=True)
        run[name]()
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
