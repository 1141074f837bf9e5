"""Coverage sweep: every torchvision classification model and the Hugging Face families cipm
covers, traced, permuted and pruned, one model per process.

Per model (random weights, BatchNorm running statistics randomized, float64 unless the family
takes only float32): trace time and whether any op needed ``unknown="freeze"``; groups and the
share of parameters that are members of one; whether a random permutation of every group
leaves the outputs the same (relative max error below 1e-9 in float64; 1e-6 where a family's
norms compute in float32 whatever the model's dtype; 1e-4 in float32);
``prune(ratio=0.5, method="magnitude", config=PruneConfig(example_inputs=...))``: parameters
before and after,
whether the result runs, which groups were kept whole and why; and the peak resident memory
of trace + permute + prune, as a multiple of the model's bytes (the model itself counts as
1). The multiple subtracts what one plain forward pass needs beyond the weights (the example
input's activations), measured first in the same process, and is shown for models of 100 MB
or more; for smaller ones torch.export's own fixed memory dominates, so the table gives their
peak in MB instead. Memory is resident set size sampled from /proc every 2 ms.

    .venv/bin/python benchmarks/zoo_sweep.py [--only resnet18,vit_b_16] [--family torchvision]
        [--timeout 1200] [--results out/zoo_sweep.jsonl] [--resume]

Each model runs in its own process (a fresh memory high-water mark, and a model that blows up
costs only its row); rows are appended to the JSON-lines file as they finish, so ``--resume``
picks up an interrupted sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import hf_families
import vision

import cipm

SIZES = {"inception_v3": 299}  # input resolution where 224 is not the model's own
LARGE_MB = 100  # below this, torch.export's own fixed memory dominates any multiple


class PeakMemory:
    """Peak resident set size, sampled by a background thread; `mark` starts a new phase."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self._stop = False
        threading.Thread(target=self._watch, daemon=True).start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def mark(self) -> int:
        """The peak since the last mark; the next phase starts from the present level."""
        peak, self.peak = self.peak, self.now()
        return max(peak, self.peak)

    def _watch(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)


def build(family: str, name: str) -> tuple[torch.nn.Module, tuple[Any, ...], float]:
    """The model, its example inputs and the relative error a permuted copy may show."""
    if family == "torchvision":
        model = vision.build(name).eval()
        gen = torch.Generator().manual_seed(0)
        for module in model.modules():  # BatchNorm: statistics that are not 0 and 1
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
        size = SIZES.get(name, 224)
        x = torch.randn(1, 3, size, size, generator=gen, dtype=torch.float64)
        return model.double(), (x,), 1e-9
    model, x, _ = hf_families.build(name)
    return model, x, hf_families.tolerance(name)


def params_in_groups(model: torch.nn.Module, graph: cipm.SymmetryGraph) -> float:
    keys = {m.key for g in graph.groups for m in g.members}
    sizes = dict(model.named_parameters())
    total = sum(p.numel() for p in sizes.values())
    return sum(p.numel() for k, p in sizes.items() if k in keys) / total


def run_one(family: str, name: str) -> dict[str, Any]:
    memory = PeakMemory()
    row: dict[str, Any] = {"family": family, "model": name}
    model, x, tolerance = build(family, name)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    base = memory.now() - weights
    memory.mark()
    with torch.no_grad():
        y = model(*x)
    y = _first(y)
    forward_extra = memory.mark() - base - weights
    t = time.perf_counter()
    try:
        graph = cipm.trace(model, x)
        row["freeze"] = ""
    except cipm.UnsupportedOpError as e:
        graph = cipm.trace(model, x, unknown="freeze")
        row["freeze"] = e.op
    row["trace_s"] = time.perf_counter() - t
    phases = {"trace": memory.mark()}
    row["groups"] = len(graph)
    row["in_groups"] = params_in_groups(model, graph)
    perm = cipm.Permutation.random(graph, seed=0)
    permuted = cipm.permute(model, perm)
    with torch.no_grad():
        y2 = _first(permuted(*x))
    del permuted
    phases["permute"] = memory.mark()
    error = float((y2 - y).abs().max() / y.abs().max().clamp_min(1e-30))
    row["exact"] = error < tolerance
    row["perm_error"] = error
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cipm.CipmWarning)
        try:
            small_result = cipm.prune(
                model,
                graph,
                ratio=0.5,
                method="magnitude",
                config=cipm.PruneConfig(example_inputs=x, progress=False),
            )
            small = small_result.model
            with torch.no_grad():
                _first(small(*x))
            row["pruned_params_M"] = sum(p.numel() for p in small.parameters()) / 1e6
            row["runs"] = True
            report = small_result.report
            row["kept_whole"] = [f"{k.group}: {k.reason}" for k in report.kept_whole]
        except Exception as e:  # a row of the table, not a crash of the sweep
            row["runs"] = False
            row["prune_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    row["warnings"] = [str(w.message)[:200] for w in caught]
    row["prune_s"] = time.perf_counter() - t
    phases["prune"] = memory.mark()
    peak = max(phases.values())
    row["model_MB"] = weights / 2**20
    row["peak_MB"] = (peak - base) / 2**20
    row["memory_x"] = (peak - base - max(forward_extra, 0)) / weights
    row["phase_x"] = {k: (v - base - max(forward_extra, 0)) / weights for k, v in phases.items()}
    return row


def _first(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if hasattr(y, "logits"):
        return y.logits
    if hasattr(y, "last_hidden_state"):
        return y.last_hidden_state
    return _first(y[0])


def models(family: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if family in ("torchvision", "all"):
        found += [("torchvision", n) for n in vision.classification_models()]
    if family in ("huggingface", "all"):
        found += [("huggingface", n) for n in hf_families.FAMILIES]
    return found


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"| {'model':24s} | params M | trace s | freeze | groups | in groups | exact "
        "| pruned M | runs | kept whole (n: first reason) | memory x |"
    )
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']:24s} | failed: {r['error'][:120]} |")
            continue
        whole = r.get("kept_whole") or []
        kept = f"{len(whole)}: {whole[0].split(': ', 1)[1][:48]}" if whole else "-"
        memory = (
            f"{r['memory_x']:8.2f}" if r["model_MB"] >= LARGE_MB else f"({r['peak_MB']:.0f} MB)"
        )
        lines.append(
            f"| {r['model']:24s} | {r['params_M']:8.3g} | {r['trace_s']:7.1f} "
            f"| {r['freeze'] or '-':6s} | {r['groups']:6d} | {r['in_groups']:9.0%} "
            f"| {'yes' if r['exact'] else 'NO':5s} | {r.get('pruned_params_M', float('nan')):8.3g} "
            f"| {'yes' if r['runs'] else 'NO':4s} | {kept} | {memory} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "error" not in r]
    n = len(rows)
    no_freeze = sum(1 for r in ok if not r["freeze"])
    exact = sum(1 for r in ok if r["exact"])
    runs = sum(1 for r in ok if r["runs"] and r["pruned_params_M"] < r["params_M"])
    large = [r for r in ok if r["model_MB"] >= LARGE_MB]
    memory = sum(1 for r in large if r["memory_x"] <= 2.5)
    small = max((r["peak_MB"] for r in ok if r["model_MB"] < LARGE_MB), default=0.0)
    return (
        f"{n} models: {no_freeze}/{n} traced without freeze, {exact}/{n} exact, "
        f"{runs}/{n} smaller and running at 50 %; peak memory within 2.5x model bytes for "
        f"{memory}/{len(large)} models of {LARGE_MB} MB or more (worst "
        f"{max((r['memory_x'] for r in large), default=0):.2f}x); the smaller ones peak at "
        f"most {small:.0f} MB beyond the process's baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("torchvision", "huggingface", "all"), default="all")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per model")
    parser.add_argument("--results", type=Path, default=Path("out/zoo_sweep.jsonl"))
    parser.add_argument("--resume", action="store_true", help="skip models already in results")
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        warnings.simplefilter("ignore")
        print(json.dumps(run_one(*args.one)))
        return
    chosen = models(args.family)
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [(f, n) for f, n in chosen if n in wanted]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if args.resume and args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            done[row["model"]] = row
    elif args.results.exists():
        args.results.unlink()
    rows = []
    for i, (family, name) in enumerate(chosen):
        if name in done:
            rows.append(done[name])
            continue
        t = time.perf_counter()
        row = _child(family, name, args.timeout)
        rows.append(row)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        state = row.get("error") or ("ok" if row["exact"] and row["runs"] else "check")
        print(f"[{i + 1}/{len(chosen)}] {name}: {state} ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    print(table(rows))
    print(summary(rows))


def _child(family: str, name: str, timeout: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", family, name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"family": family, "model": name, "error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        killed = " (killed: out of memory?)" if done.returncode < 0 else ""
        return {"family": family, "model": name, "error": f"{last}{killed}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
