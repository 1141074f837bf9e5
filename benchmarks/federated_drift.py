"""Matched averaging against FedAvg over many label-skew draws, in a plain loop.

`examples/federated_digits.py` runs both strategies on Flower, whose simulation is not
bit-reproducible and takes about a minute and a half per draw here; ten draws do not
separate strategies whose curves swing by several points from round to round. This script
runs the same federated rounds (the example's clients, split, model and training) in one
process, deterministically, so that 30 draws fit in a quarter of an hour, and measures two
things per draw:

- the trajectories: FedAvg's global model after every round against matched averaging's
  (each strategy aggregates its own clients; they agree until the first aggregation);
- a paired gain: along FedAvg's trajectory, every round's client models are also merged by
  matched averaging, and both merges of the same clients are scored; this isolates what
  alignment buys per aggregation from the noise that compounds over rounds. It also counts
  how many units weight matching moved.

    python benchmarks/federated_drift.py [--draws 30] [--first-draw 10] [--epochs 50]
        [--lr 3e-2] [--rounds 10]

Draws are Dirichlet(alpha) label-skew splits of the digits training set, seed = draw number.
The defaults are the high-drift regime (50 local epochs at lr 3e-2 per round); the example's
default regime is ``--epochs 20 --lr 1e-2``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn

import cipm
from cipm.examples.data import digits, train_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from federated_digits import (
    Part,
    accuracy,
    batches,
    federation_arguments,
    label_skew,
    make_model,
)


def local_round(
    starts: list[nn.Module], parts: list[Part], epochs: int, lr: float, server_round: int
) -> list[nn.Module]:
    """Client k trains a copy of `starts[k]` on its own part, seeded as the example's clients."""
    return [
        train_classifier(
            copy.deepcopy(m), batches(p), epochs=epochs, seed=1000 * server_round + k, lr=lr
        )
        for k, (m, p) in enumerate(zip(starts, parts, strict=True))
    ]


def moved_units(start: nn.Module, clients: list[nn.Module], graph: cipm.SymmetryGraph) -> int:
    """How many units weight matching moves, summed over clients and groups."""
    perms = cipm.federated.match_clients(start, clients, graph)
    return sum(int((p[g.name] != torch.arange(g.size)).sum()) for p in perms for g in graph.groups)


def one_draw(args: argparse.Namespace, train: Part, test: Part, draw: int) -> dict[str, list]:
    torch.set_num_threads(1)
    parts = label_skew(*train, args.clients, args.alpha, seed=draw)
    sizes = [len(p[1]) for p in parts]
    shares = [n / sum(sizes) for n in sizes]
    init = make_model(args.width)
    graph = cipm.trace(init, test[0][:4])
    fedavg, matched = init, init
    out: dict[str, list] = {"fedavg": [], "matched": [], "paired": [], "moved": []}
    for r in range(1, args.rounds + 1):
        cold = args.cold_start and r == 1
        starts = [
            make_model(args.width, seed=10 + k) if cold else fedavg for k in range(len(parts))
        ]
        clients = local_round(starts, parts, args.epochs, args.lr, r)
        fedavg_next = cipm.merge(clients, graph, weights=shares)
        # a cold start has no common model to align to: merge one-shot, onto the largest client
        reference = clients[sizes.index(max(sizes))] if cold else fedavg
        one_shot = cipm.MatchConfig(passes=3 if cold else 1)
        paired = cipm.federated.matched_average(
            reference, clients, graph, weights=sizes, config=one_shot
        )
        out["paired"].append(accuracy(paired, test) - accuracy(fedavg_next, test))
        out["moved"].append(moved_units(reference, clients, graph))
        fedavg = fedavg_next
        out["fedavg"].append(accuracy(fedavg, test))
        if r == 1:  # same clients, so the same merge as the paired one
            matched = paired
        else:
            clients = local_round([matched] * len(parts), parts, args.epochs, args.lr, r)
            matched = cipm.federated.matched_average(matched, clients, graph, weights=sizes)
        out["matched"].append(accuracy(matched, test))
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    se = float(t.std()) / math.sqrt(len(t)) if len(t) > 1 else float("nan")
    return float(t.mean()), se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--first-draw", type=int, default=10, help="seed of the first split")
    federation_arguments(parser, epochs=50, lr=3e-2)
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="round 1's clients start from their own initializations (trained alone first)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="draws run in parallel processes")
    args = parser.parse_args()
    draws = range(args.first_draw, args.first_draw + args.draws)
    print(
        f"{args.clients} clients, Dirichlet({args.alpha}), {args.epochs} local epochs at lr "
        f"{args.lr}, MLP width {args.width}, {args.rounds} rounds, draws {draws.start}-"
        f"{draws.stop - 1}"
    )
    train_batches, test_batches = digits(batch=10_000)
    runs = []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for draw, run in zip(
            draws,
            pool.map(functools.partial(one_draw, args, train_batches[0], test_batches[0]), draws),
            strict=True,
        ):
            runs.append(run)
            print(
                f"  draw {draw:3d}: FedAvg {run['fedavg'][-1]:6.1%}  matched "
                f"{run['matched'][-1]:6.1%}  paired gain per round "
                f"{100 * sum(run['paired']) / args.rounds:+5.1f} pts  "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    print(f"\n{'round':>5s}{'FedAvg':>16s}{'matched':>16s}{'paired gain':>18s}{'units moved':>13s}")
    for r in range(args.rounds):
        cells = []
        for key in ("fedavg", "matched"):
            m, se = mean_se([run[key][r] for run in runs])
            cells.append(f"{m:7.1%} ± {se:4.1%}")
        gain, gain_se = mean_se([100 * run["paired"][r] for run in runs])
        moved = sum(run["moved"][r] for run in runs) / len(runs)
        print(
            f"{r + 1:5d}{cells[0]:>16s}{cells[1]:>16s}{gain:+9.2f} ± {gain_se:4.2f} pts"
            f"{moved:13.1f}"
        )
    gaps = [100 * (run["matched"][-1] - run["fedavg"][-1]) for run in runs]
    gap, gap_se = mean_se(gaps)
    ahead = sum(g > 0 for g in gaps)
    print(
        f"\nmatched - FedAvg after {args.rounds} rounds: {gap:+.2f} ± {gap_se:.2f} points "
        f"(mean ± standard error over {len(gaps)} draws), ahead in {ahead}, behind in "
        f"{sum(g < 0 for g in gaps)}"
    )
    per_round = [100 * g for run in runs for g in run["paired"]]
    gain, gain_se = mean_se([100 * sum(run["paired"]) / args.rounds for run in runs])
    print(
        f"paired gain of matched over FedAvg merging the same clients: {gain:+.2f} ± "
        f"{gain_se:.2f} points per aggregation (standard error over draws), ahead in "
        f"{sum(g > 0 for g in per_round)} and behind in {sum(g < 0 for g in per_round)} of "
        f"{len(per_round)} aggregations"
    )


if __name__ == "__main__":
    main()
