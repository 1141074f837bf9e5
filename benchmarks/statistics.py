"""Cost of collecting statistics: forward alone vs forward with cipm.collect, side by side.

For a ResNet-20-style CNN and a BERT-small-sized encoder (4 layers, hidden 512, 8 heads,
intermediate 2048), on the same batches in one process, repetitions interleaved, best of each:
- forward:    the eval-mode model alone, under no_grad;
- cipm:       cipm.collect, minus its one-time setup (shown apart): torch.export of the
              model and instrumenting the exported graph to observe the sites;
- sample=.25: the same with a quarter of each batch's samples;
- naive:      keep every activation and call torch.cov on all of them after each batch (how
              one has statistics at every point without sufficient statistics);
- stack-once: keep every activation, one torch.cov at the end;
- products:   the covariance products alone (each group's own sum of outer products, as
              cipm computes them), on activations recorded beforehand: the floor of exact
              statistics, whatever else collection does.
Speed-ups compare the statistics work alone (time minus forward). Peak memory is measured in
fresh processes, for a lazy loader and one four times longer.

    python benchmarks/statistics.py [--batches 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import cipm
from cipm.examples import catalog
from cipm.statistics.capture import SiteRecorder
from cipm.statistics.moments import _add_own_gram

Batches = list[torch.Tensor]


def encoder_small() -> tuple[torch.nn.Module, Callable[[int], torch.Tensor]]:
    model = catalog.Encoder(vocab=30522, d=512, heads=8, layers=4, ff=2048, context=512).eval()

    def make(i: int) -> torch.Tensor:
        return torch.randint(0, 30522, (8, 128), generator=torch.Generator().manual_seed(i))

    return model, make


def resnet() -> tuple[torch.nn.Module, Callable[[int], torch.Tensor]]:
    model = catalog.ResNet(3, 16).eval()

    def make(i: int) -> torch.Tensor:
        return torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(i))

    return model, make


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def naive(recorder: SiteRecorder, loader: Batches, per_batch: bool) -> None:
    kept: dict[str, list[torch.Tensor]] = {}
    for i, x in enumerate(loader):
        for group, units in recorder.run(x, i).items():
            rows = units.movedim(1, -1).reshape(-1, units.shape[1]).double()
            kept.setdefault(group, []).append(rows)
            if per_batch:
                torch.cov(torch.cat(kept[group]).T)
    if not per_batch:
        for rows_list in kept.values():
            torch.cov(torch.cat(rows_list).T)


def products(recorder: SiteRecorder, loader: Batches, repeat: int) -> float:
    """Seconds of the covariance products alone over the loader (best of `repeat`)."""
    best = float("inf")
    for _ in range(repeat):
        spent = 0.0
        for i, x in enumerate(loader):
            # centered, as collection multiplies them (which also makes them contiguous)
            units = [b - b.mean((0, 2), keepdim=True) for b in recorder.run(x, i).values()]
            start = time.perf_counter()
            for blocks in units:
                _add_own_gram(None, blocks)
            spent += time.perf_counter() - start
        best = min(best, spent)
    return best


def measure(
    model: torch.nn.Module, loader: Batches, repeat: int, sample: float
) -> dict[str, float]:
    graph = cipm.trace(model, loader[0])
    recorder = SiteRecorder(model, graph)
    recorder.run(loader[0], 0)

    def forward() -> None:
        with torch.no_grad():
            for x in loader:
                model(x)

    runs: dict[str, list[float]] = {k: [] for k in ("forward", "cipm", "sampled", "setup")}
    cipm.collect(model, graph, loader[:1], config=cipm.CollectConfig(progress=False))  # warm-up
    for _ in range(repeat):
        runs["forward"].append(timed(forward))
        runs["setup"].append(timed(lambda: SiteRecorder(model, graph).check(loader[0])))
        runs["cipm"].append(
            timed(
                lambda: cipm.collect(
                    model, graph, loader, config=cipm.CollectConfig(progress=False)
                )
            )
        )
        runs["sampled"].append(
            timed(
                lambda: cipm.collect(
                    model, graph, loader, config=cipm.CollectConfig(sample=sample, progress=False)
                )
            )
        )
    result = {k: min(v) for k, v in runs.items()}  # least disturbed run
    result["cipm"] -= result["setup"]
    result["sampled"] -= result["setup"]
    result["products"] = products(recorder, loader, repeat)
    result["naive"] = timed(lambda: naive(recorder, loader, True))
    result["stack"] = timed(lambda: naive(recorder, loader, False))
    result["groups"] = len(graph)
    return result


def probe_peak_rss(mode: str, batches: int) -> float:
    """Peak resident set (MiB) of a fresh process collecting over a lazy loader."""
    model, make = resnet()
    graph = cipm.trace(model, make(0))
    loader = (make(i) for i in range(batches))  # lazy: the loader itself holds one batch
    if mode == "cipm":
        cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    else:
        naive(SiteRecorder(model, graph), list(loader), per_batch=False)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(batches: int) -> list[str]:
    """Peak memory of fresh processes, for a loader and one four times longer."""
    lines = []
    for n in (batches, 4 * batches):
        peaks = {}
        for mode in ("cipm", "keep"):
            out = subprocess.run(
                [sys.executable, __file__, "--probe", mode, "--batches", str(n)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            peaks[mode] = float(out.split()[-1])
        lines.append(
            f"  {n:4d} batches: cipm.collect {peaks['cipm']:.0f} MiB   "
            f"keeping activations {peaks['keep']:.0f} MiB"
        )
    return lines


def _speedup(naive: float, cipm: float, forward: float) -> str:
    """Statistics work of the naive way over cipm's (each minus the forward pass); when cipm's
    is lost in the timing noise (under 2 % of a forward pass), a lower bound."""
    floor = 0.02 * forward
    return f"{naive / cipm:.1f}x" if cipm > floor else f">= {naive / floor:.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=float, default=0.25, help="fraction for the sampled run")
    parser.add_argument("--probe", choices=("cipm", "keep"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.probe:
        print(probe_peak_rss(args.probe, args.batches))
        return
    header = (
        "model",
        "groups",
        "forward s",
        "cipm s",
        "overhead",
        f"sample={args.sample:g}",
        "naive s",
        "speed-up vs naive",
        "stack-once s",
        "setup s (once)",
        "products alone",
    )
    table = [header]
    for name, build in (("resnet20", resnet), ("bert_small", encoder_small)):
        model, make = build()
        r = measure(model, [make(i) for i in range(args.batches)], args.repeat, args.sample)
        f = r["forward"]
        table.append(
            (
                name,
                str(int(r["groups"])),
                f"{f:.2f}",
                f"{r['cipm']:.2f}",
                f"{(r['cipm'] - f) / f:+.0%}",
                f"{(r['sampled'] - f) / f:+.0%}",
                f"{r['naive']:.2f}",
                _speedup(r["naive"] - f, r["cipm"] - f, f),
                f"{r['stack']:.2f}",
                f"{r['setup']:.2f}",
                f"{r['products']:.2f} s ({r['products'] / f:.0%})",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"\n{args.batches} batches (resnet20: 64 images 32x32; bert_small: 8 x 128 tokens), "
        f"best of {args.repeat}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("\npeak resident memory of a fresh process collecting on resnet20 (lazy loader):")
    print("\n".join(memory(args.batches)))


if __name__ == "__main__":
    main()
