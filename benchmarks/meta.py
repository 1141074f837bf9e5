"""The meta-analysis network: what training costs, how fast a policy is at width, and the
first figures beside the analytic policies on held-out zoo models.

1. Training: seconds per step on the zoo's training split (this machine, one run).
2. Policy inference per group at widths 512..8192 (one hidden layer of an MLP, statistics of
   4096 random samples): building the input graph from the statistics, the network's
   forward pass, the argsort; against one width x width linear assignment (scipy, the step
   weight and activation matching repeat per group and sweep). Target: network + argsort
   <= 50 ms at 4096 units.
3. Held-out zoo models (other seeds, another width, the transformer family not trained on):
   `cipm.meta.evaluate`'s tables (pruning, stability, reorganization, canonical matching).

    python benchmarks/meta.py [--network out/meta.safetensors] [--zoo out/zoo]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import scipy.optimize
import torch
from torch import nn

import cipm
from cipm.meta.evaluate import disjoint_pairs, evaluate_pairs, evaluate_specimens, table
from cipm.meta.inputs import meta_input
from cipm.meta.zoo import build_zoo, family_data, load_zoo

WIDTHS = (512, 1024, 2048, 4096, 8192)


def training_cost(zoo_folder: str, steps: int) -> float:
    zoo = load_zoo(zoo_folder, "train")
    meta = cipm.MetaAnalyzer()
    meta.fit(
        zoo, config=cipm.meta.FitConfig(steps=1, progress=False)
    )  # exports and caches outside the timing
    start = time.perf_counter()
    meta.fit(zoo, config=cipm.meta.FitConfig(steps=steps, progress=False))
    return (time.perf_counter() - start) / steps


def inference(meta: cipm.MetaAnalyzer, width: int, repeats: int = 3) -> dict[str, float]:
    torch.manual_seed(width)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)).eval()
    x = torch.randn(4096, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = cipm.trace(model, x[:8])
    stats = cipm.collect(model, graph, x.split(1024), config=cipm.CollectConfig(progress=False))
    tensors = stats.check_model(model)
    best = {"graph": float("inf"), "network": float("inf"), "argsort": float("inf")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = meta_input(stats, tensors, meta.config)
        t1 = time.perf_counter()
        with torch.no_grad():
            scores = meta.network(g)
        t2 = time.perf_counter()
        torch.argsort(scores, descending=True)
        t3 = time.perf_counter()
        for k, v in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            best[k] = min(best[k], v)
    cost = -stats[graph.groups[0].name].corr.numpy()
    t0 = time.perf_counter()
    scipy.optimize.linear_sum_assignment(cost)
    best["assignment"] = time.perf_counter() - t0
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="pretrained", help="FILE.safetensors")
    parser.add_argument("--zoo", default="out/zoo")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not Path(args.zoo, "index.json").is_file():
        build_zoo(args.zoo)
    meta = (
        cipm.MetaAnalyzer.pretrained()
        if args.network == "pretrained"
        else cipm.MetaAnalyzer.load(args.network)
    )
    per_step = training_cost(args.zoo, args.steps)
    trained = len(meta.history.rows)
    print(f"1. training: {per_step:.3f} s per step (batch 4, zoo training split)")
    print(f"   the network evaluated was trained {trained} steps: ~{per_step * trained:.0f} s")
    print("\n2. policy inference per group (ms; best of 3) vs one linear assignment")
    print(f"{'width':>6} {'graph':>9} {'network':>9} {'argsort':>8} {'net+sort':>9} "
          f"{'assignment':>11} {'assign/net+sort':>16}")  # fmt: skip
    for width in WIDTHS:
        t = inference(meta, width)
        policy = t["network"] + t["argsort"]
        print(
            f"{width:>6} {1e3 * t['graph']:>9.1f} {1e3 * t['network']:>9.1f} "
            f"{1e3 * t['argsort']:>8.2f} {1e3 * policy:>9.1f} {1e3 * t['assignment']:>11.0f} "
            f"{t['assignment'] / policy:>16.0f}x"
        )
    print("\n3. held-out zoo models")
    zoo = load_zoo(args.zoo, ["heldout-seed", "heldout-width", "heldout-family"])
    test = {f: family_data(f)[1] for f in {s.spec.family for s in zoo}}
    rows = evaluate_specimens(meta, zoo, test, ratio=args.ratio)
    print(table(rows, evaluate_pairs(meta, disjoint_pairs(zoo)), args.ratio))


if __name__ == "__main__":
    main()
