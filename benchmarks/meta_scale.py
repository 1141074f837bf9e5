"""Learned against analytic alignment at scale (issue 15): time and loss barrier of weight
matching, learned co-canonicalization and learned + windowed refinement on pairs of MLPs
trained here, and what one policy costs against one assignment solve at widths to 16384.

(a) Alignment at scale: pairs (seeds 0 and 1) of 40-W-W-10 ReLU MLPs trained on MNIST-1D
    (made procedurally) at each width W; trained models are cached under out/meta_scale/.
    Each method aligns B onto A; its time counts everything it needs from the trained
    models: weight matching reads the weights; learned collects both models' statistics
    (256 training inputs), scores them with the pretrained meta-network and sorts;
    learned + windowed adds exact assignments inside 512-unit windows of the learned order
    (`cipm.alignment.windowed`). Loss barrier: on 1024 training inputs, 11 points from A
    to the aligned B. Warm start (widths to 2048: each is one more full descent): the
    assignment solves weight matching takes to its fixed point from the identity, from the
    learned permutation and from the windowed one.
(b) Cost: policy inference of one group (graph from statistics, network, argsort) against
    one width x width linear assignment (scipy), as benchmarks/meta.py measures it.

    python benchmarks/meta_scale.py [--widths 512,1024,...] [--cost-widths ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

import cipm
from cipm.alignment.descent import DescentStats
from cipm.alignment.weight import weight_matching
from cipm.alignment.windowed import windowed_matching
from cipm.examples.data import Batches, train_classifier
from cipm.meta.analyzer import MetaAnalyzer
from cipm.meta.zoo.families import FAMILY, family_data
from cipm.tensors.fitted import fitted_tensors

sys.path.insert(0, str(Path(__file__).parent))
from meta import inference  # benchmarks/meta.py: the cost of one policy

T = TypeVar("T")
WIDTHS = (512, 1024, 2048, 4096, 8192)
COST_WIDTHS = (512, 1024, 2048, 4096, 8192, 16384)
EPOCHS = {512: 20, 1024: 12, 2048: 8, 4096: 5, 8192: 3}  # wider trains to a fit sooner
CACHE = Path("out/meta_scale")
CALIBRATION = 2  # training batches of 128 for the learned statistics (256 inputs)
BARRIER = 8  # training batches the loss barriers are measured on (1024 inputs)
WARM_UP_TO = 2048  # widths whose warm starts are measured (each is one more full descent)
WINDOW = 512


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def trained(width: int, seed: int, data: Batches) -> nn.Module:
    """The 2-hidden-layer MNIST-1D MLP of `width` and `seed`, trained once and cached."""
    torch.manual_seed(seed)
    model = FAMILY["mlp-mnist1d"].model(width, 2)
    path = CACHE / f"mlp-mnist1d-{width}-seed{seed}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train_classifier(model, data, epochs=EPOCHS.get(width, 3), seed=seed, lr=1e-3)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def scale_row(width: int, window: int = WINDOW) -> dict[str, Any]:
    """One width's row: times, solves and barriers of every method (see the docstring)."""
    train, _ = family_data("mlp-mnist1d")
    a, b = trained(width, 0, train), trained(width, 1, train)
    graph = cipm.trace(a, train[0][0])
    state_a, state_b = fitted_tensors(a, graph), fitted_tensors(b, graph)
    calib = [x for x, _ in train[:CALIBRATION]]
    meta = MetaAnalyzer.pretrained()

    def barrier(perm: cipm.Permutation) -> float:
        return cipm.barrier(a, cipm.permute(b, perm), train[:BARRIER]).loss_barrier

    def learned() -> tuple[cipm.Permutation, cipm.Permutation]:
        pa = meta.policy(
            a, cipm.collect(a, graph, calib, config=cipm.CollectConfig(progress=False))
        )
        pb = meta.policy(
            b, cipm.collect(b, graph, calib, config=cipm.CollectConfig(progress=False))
        )
        perm = {g.name: pb[g.name][torch.argsort(pa[g.name])] for g in graph}
        return cipm.Permutation(graph, perm), pa

    cold = DescentStats()
    t_wm, wm = timed(lambda: weight_matching(state_a, state_b, graph, stats=cold))
    t_learned, (lp, order) = timed(learned)
    refined = DescentStats()
    t_window, wp = timed(
        lambda: windowed_matching(
            state_a, state_b, graph, lp, order=order, window=window, stats=refined
        )
    )
    warm = {"learned": DescentStats(solves=-1), "windowed": DescentStats(solves=-1)}
    for name, start in (("learned", lp), ("windowed", wp)):
        if width <= WARM_UP_TO:
            warm[name] = DescentStats()
            weight_matching(state_a, state_b, graph, start=start, stats=warm[name])
    row = {
        "width": width,
        "wm_s": t_wm,
        "wm_solves": cold.solves,
        "wm_barrier": barrier(wm),
        "learned_s": t_learned,
        "learned_barrier": barrier(lp),
        "windowed_s": t_learned + t_window,
        "window_solves": refined.solves,
        "windowed_barrier": barrier(wp),
        "warm_learned_solves": warm["learned"].solves,
        "warm_windowed_solves": warm["windowed"].solves,
        "none_barrier": cipm.barrier(a, b, train[:BARRIER]).loss_barrier,
    }
    print(row, flush=True)
    return row


def cost_rows(widths: tuple[int, ...]) -> list[dict[str, float]]:
    """Per width, benchmarks/meta.py's timings (seconds) of one group's policy and of one
    linear assignment."""
    meta = MetaAnalyzer.pretrained()
    rows = []
    for width in widths:
        t = inference(meta, width, repeats=2)
        rows.append({"width": width, **t, "policy": t["network"] + t["argsort"]})
        print(rows[-1], flush=True)
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| width | WM s | WM solves | WM barrier | learned s | learned barrier "
        "| learned+windowed s | windowed barrier | warm WM solves (from learned / windowed) "
        "| speed-up windowed vs WM | barrier ratio windowed / WM | no alignment barrier |",
        "|---:" * 12 + "|",
    ]
    for r in rows:
        ratio = r["windowed_barrier"] / r["wm_barrier"] if r["wm_barrier"] > 0 else float("inf")
        out.append(
            f"| {r['width']} | {r['wm_s']:.2f} | {r['wm_solves']} | {r['wm_barrier']:.4f} "
            f"| {r['learned_s']:.2f} | {r['learned_barrier']:.4f} | {r['windowed_s']:.2f} "
            f"| {r['windowed_barrier']:.4f} "
            f"| {_solves(r['warm_learned_solves'])} / {_solves(r['warm_windowed_solves'])} "
            f"| {r['wm_s'] / r['windowed_s']:.1f}x | {ratio:.2f} | {r['none_barrier']:.4f} |"
        )
    return "\n".join(out)


def _solves(n: int) -> str:
    return "-" if n < 0 else str(n)


def cost_table(rows: list[dict[str, float]]) -> str:
    out = [
        "| width | graph from statistics (ms) | network (ms) | argsort (ms) "
        "| network + argsort (ms) | one linear assignment, scipy (ms) | ratio |",
        "|---:" * 7 + "|",
    ]
    for r in rows:
        out.append(
            f"| {r['width']} | {1e3 * r['graph']:.1f} | {1e3 * r['network']:.1f} "
            f"| {1e3 * r['argsort']:.2f} | {1e3 * r['policy']:.1f} "
            f"| {1e3 * r['assignment']:.0f} | {r['assignment'] / r['policy']:.0f}x |"
        )
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Barrier vs width and time vs width, log axes, one line per method."""
    from cipm.io import atomic_path, figure

    widths = [r["width"] for r in rows]
    fig = figure(figsize=(10, 4))
    ax_b, ax_t = fig.subplots(1, 2)
    methods = (("wm", "weight matching"), ("learned", "learned"), ("windowed", "learned+windowed"))
    for key, label in methods:
        ax_b.plot(widths, [max(r[f"{key}_barrier"], 1e-4) for r in rows], marker="o", label=label)
        ax_t.plot(widths, [r[f"{key}_s"] for r in rows], marker="o", label=label)
    ax_b.plot(widths, [r["none_barrier"] for r in rows], "k--", label="no alignment")
    ax_b.set(xscale="log", yscale="log", xlabel="width", ylabel="train loss barrier")
    ax_t.set(xscale="log", yscale="log", xlabel="width", ylabel="seconds to align")
    ax_b.legend()
    ax_t.legend()
    for ax in (ax_b, ax_t):
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)  # log axes' minor labels would overprint the widths
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--cost-widths", default=",".join(map(str, COST_WIDTHS)))
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--plot", default="docs/img/meta_scale.png")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = [scale_row(int(w), args.window) for w in args.widths.split(",") if w]
    costs = cost_rows(tuple(int(w) for w in args.cost_widths.split(",") if w))
    print("\n(a) alignment at scale: MNIST-1D MLPs 40-W-W-10, seeds 0 and 1")
    print(scale_table(rows))
    print("\n(b) policy inference per group (best of 2) vs one linear assignment")
    print(cost_table(costs))
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"\nplot: {args.plot}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
