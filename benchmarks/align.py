"""Alignment side by side: cipm against the PyPI package `rebasin` on the same trained pair.

Two 3x512 MLPs (and two small CNNs) are trained on scikit-learn's digits from different
seeds. Each method aligns B to A; we time it and measure the test loss and error barrier
along the straight line from A to the aligned B (11 points, as seed 000 defines barriers).
Then weight matching is timed on one 4096-unit group and on a BERT-base-sized encoder, split
into the time spent in the assignment solves and the rest.

    python benchmarks/align.py
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from unittest import mock

import scipy.optimize
import torch
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import Batches, digits, train_classifier

T = TypeVar("T")


def mlp() -> nn.Module:
    return catalog.mlp(depth=3, width=512, d_in=64, d_out=10)[0]


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 16, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train(make: Callable[[], nn.Module], data: Batches, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    return train_classifier(make(), data, epochs=epochs, seed=seed)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class TimeSpent(NamedTuple):
    """Where weight matching's time goes on one trained pair."""

    model: str
    total: float  # seconds of cipm.align
    solve: float  # of which in linear_sum_assignment
    moved: list[int]  # units each solve moved, in order
    rebasin: float  # rebasin's seconds on the same pair
    sweeps: list[tuple[str, float, float, float, float]]  # see `sweeps`


def compare(
    name: str, make: Callable[[], nn.Module], image: bool, epochs: int
) -> tuple[list[tuple], TimeSpent]:
    """Rows of (model, method, seconds, barrier curve, how far B's outputs moved), and where
    weight matching's time goes."""
    train_data, test_data = digits(image)
    a = train(make, train_data, 1, epochs)
    b = train(make, train_data, 2, epochs)
    x0 = train_data[0][0]
    cipm.trace(a, x0)  # the first export in a process pays one-time start-up costs
    t_trace, graph = timed(lambda: cipm.trace(a, x0))
    calib = [x for x, _ in train_data[:8]]
    x_test = torch.cat([x for x, _ in test_data])

    def row(method: str, seconds: float, aligned: nn.Module) -> tuple:
        """A row; `changed` is how far the aligned B's outputs moved from B's (a correct
        permutation keeps them to float32 rounding)."""
        with torch.no_grad():
            changed = float((aligned(x_test) - b(x_test)).abs().max())
        return (name, method, seconds, cipm.barrier(a, aligned, test_data), changed)

    rows = [row("none (plain average)", 0.0, b)]
    t, perm = timed(lambda: cipm.align(a, b, graph, method="weight"))
    rows.append(row("cipm weight matching", t, cipm.permute(b, perm)))
    # rebasin's time includes finding the model's structure: so does this row
    rows.append(row("cipm trace + weight match", t_trace + t, cipm.permute(b, perm)))
    t, perm = timed(lambda: cipm.align(a, b, graph, method="activation", data=calib))
    rows.append(row("cipm activation matching", t, cipm.permute(b, perm)))
    t, perm = timed(lambda: cipm.align(a, b, graph, method="sinkhorn"))
    rows.append(row("cipm Sinkhorn matching", t, cipm.permute(b, perm)))
    t, perm = timed(lambda: cipm.align(a, b, graph, method="ste", data=train_data))
    rows.append(row("cipm STE matching", t, cipm.permute(b, perm)))
    try:
        from rebasin import PermutationCoordinateDescent

        b_copy = copy.deepcopy(b)
        t, _ = timed(lambda: PermutationCoordinateDescent(a, b_copy, x0).rebasin())
        rows.append(row("rebasin (PyPI)", t, b_copy))
    except Exception as e:  # report, don't hide: a peer that fails on a model is a result
        rows.append((name, f"rebasin failed: {type(e).__name__}", float("nan"), None, None))
    total, solve, moved = solve_share(a, b, graph)
    peer = next(r[2] for r in rows if "rebasin" in r[1])
    return rows, TimeSpent(name, total, solve, moved, peer, sweeps(a, b, graph, test_data))


def solve_share(
    a: nn.Module, b: nn.Module, graph: cipm.SymmetryGraph
) -> tuple[float, float, list[int]]:
    """(total seconds, seconds in linear_sum_assignment, units each solve moved) of weight
    matching B to A."""
    solve = scipy.optimize.linear_sum_assignment
    spent, moved = [0.0], []

    def timed_solve(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        rows, cols = solve(*args, **kwargs)
        spent[0] += time.perf_counter() - start
        moved.append(int((cols != rows).sum()))
        return rows, cols

    with mock.patch.object(scipy.optimize, "linear_sum_assignment", timed_solve):
        total, _ = timed(lambda: cipm.align(a, b, graph))
    return total, spent[0], moved


def sweeps(
    a: nn.Module, b: nn.Module, graph: cipm.SymmetryGraph, test: Batches
) -> list[tuple[str, float, float, float, float]]:
    """Weight matching stopped after 1-5 sweeps and at its fixed point: (sweeps, seconds
    (best of 3), matched weights sum_W <W_A, P(W_B)>, loss barrier, error barrier)."""
    out = []
    for limit in (1, 2, 3, 4, 5, 100):
        runs = [
            timed(lambda k=limit: cipm.align(a, b, graph, config=cipm.AlignConfig(max_sweeps=k)))  # type: ignore[misc]
            for _ in range(3)
        ]
        seconds, perm = min(runs, key=lambda r: r[0])
        aligned = cipm.permute(b, perm)
        state_b = aligned.state_dict()
        match = sum(float((w * state_b[k]).sum()) for k, w in a.state_dict().items())
        curve = cipm.barrier(a, aligned, test)
        label = str(limit) if limit < 100 else "fixed point"
        out.append((label, seconds, match, curve.loss_barrier, curve.error_barrier))
    return out


def perturbed_copy(model: nn.Module, graph: cipm.SymmetryGraph) -> nn.Module:
    """A randomly permuted copy of `model` with 1 % noise on every weight."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return cipm.permute(other, graph.random_permutation(seed=0))


def main() -> None:
    warnings.simplefilter("ignore")
    mlp_rows, mlp_time = compare("digits MLP 3x512", mlp, image=False, epochs=20)
    cnn_rows, cnn_time = compare("digits CNN", cnn, image=True, epochs=10)
    rows = mlp_rows + cnn_rows
    print(
        f"{'model':18s}  {'method':26s}  {'time s':>7s}  {'loss barrier':>12s}  "
        f"{'error barrier':>13s}  {'B changed by':>12s}  {'speed-up vs rebasin':>19s}"
    )
    for model_name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == model_name]
        peer = next((r[2] for r in mine if r[1] == "rebasin (PyPI)"), None)
        for _, method, t, curve, changed in mine:
            speed = f"{peer / t:.1f}x" if peer and t and "cipm" in method else ""
            lb = f"{curve.loss_barrier:.4f}" if curve else "-"
            eb = f"{curve.error_barrier:.2%}" if curve else "-"
            ch = f"{changed:.1e}" if changed is not None else "-"
            print(
                f"{model_name:18s}  {method:26s}  {t:7.3f}  {lb:>12s}  {eb:>13s}  {ch:>12s}  "
                f"{speed:>19s}"
            )
    print(
        "\nB changed by: max |B'(x) - B(x)| on the test set; a permutation must keep B's "
        "function, so a large value means the method changed the model (its barrier is then "
        "not B's)."
    )
    print("\nweight matching, where the time goes:")
    for t in (mlp_time, cnn_time):
        print(
            f"  {t.model:24s} total {t.total:6.3f} s  {len(t.moved):4d} assignment solves "
            f"{t.solve:6.3f} s ({t.solve / t.total:.0%}, {t.solve / len(t.moved) * 1e3:.1f} ms "
            f"each)  rebasin / 10 = {t.rebasin / 10:.3f} s"
        )
    wide = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 10))
    for label, model, x in (
        ("one 4096-unit group", wide, torch.randn(2, 64)),
        ("BERT-base-sized encoder", *catalog.build("bert_base")),
    ):
        graph = cipm.trace(model, x)
        total, solve, moved = solve_share(model, perturbed_copy(model, graph), graph)
        print(
            f"  {label:24s} total {total:6.3f} s  {len(moved):4d} assignment solves {solve:6.3f} s "
            f"({solve / total:.0%}), {len(graph)} groups"
        )
    moved = " ".join(map(str, mlp_time.moved))
    print(f"\n{mlp_time.model}: units each solve moved, in order: {moved}")
    print(
        f"stopped after: {'sweeps':>20s}  {'time s':>7s}  {'matched weights':>15s}  "
        "loss / error barrier"
    )
    for label, seconds, match, loss, error in mlp_time.sweeps:
        print(f"{'':23s} {label:>11s}  {seconds:7.3f}  {match:15.4f}  {loss:.4f} / {error:.2%}")


if __name__ == "__main__":
    main()
