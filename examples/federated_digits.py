"""Federated learning on digits under label skew, on Flower: FedAvg against matched averaging
(`cipm.federated.MatchedAveraging`) and learned co-canonicalization, and one-shot merging of
independently trained clients.

    python examples/federated_digits.py [--rounds 10] [--clients 5] [--alpha 0.1]
        [--splits 3] [--out docs/img/federated_digits.png]

Each client holds the digits of a Dirichlet(alpha) share of every class (small alpha: few
classes per client). Every round each client trains the global MLP for a few epochs on its
own data; the server aggregates with Flower's FedAvg or with matched averaging (each client
weight-matched to the global model first). Both run in Flower's simulation engine (Ray),
each in a child process under a timeout. Test accuracy of the global model after every
round is printed, as the mean (± standard deviation) over `--splits` label-skew draws: at
this skew one draw's curves swing by several points from round to round, so one draw does
not separate the strategies (`benchmarks/federated_drift.py` runs the same rounds without
Flower, deterministically, over 30 draws). The third column is learned
co-canonicalization: each client sorts its units by the pretrained meta-analysis network's
scores on its own data before it replies (`cipm.federated.canonical_client`), and the
server averages with FedAvg, no matching.

One-shot: 4 clients trained from different initializations, merged once by plain averaging,
by matched averaging (MergeMany-style passes), with REPAIR on 256 unlabeled inputs the
server holds, and by learned co-canonicalization, against the best single client.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import digits, train_classifier
from cipm.io import figure, save_figure

Part = tuple[torch.Tensor, torch.Tensor]


STRATEGIES = ("fedavg", "matched", "learned")
LABELS = {"fedavg": "FedAvg", "matched": "matched", "learned": "learned co-canon."}


def make_model(width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return catalog.mlp(depth=2, width=width, d_in=64, d_out=10)[0]


def label_skew(
    x: torch.Tensor, y: torch.Tensor, clients: int, alpha: float, seed: int
) -> list[Part]:
    """Split by label: each class's examples go to the clients in Dirichlet(alpha)
    proportions (alpha <= 0: equal shares, IID)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    owner = torch.empty(len(y), dtype=torch.long)
    for c in range(10):
        where = (y == c).nonzero().squeeze(1)
        where = where[torch.randperm(len(where), generator=gen)]
        if alpha > 0:
            share = torch.tensor(rng.dirichlet([alpha] * clients))
        else:
            share = torch.full((clients,), 1.0 / clients)
        cuts = [0, *(share.cumsum(0) * len(where)).round().long().tolist()]
        for k in range(clients):
            owner[where[cuts[k] : cuts[k + 1]]] = k
    return [(x[owner == k], y[owner == k]) for k in range(clients)]


def batches(part: Part, size: int = 32) -> list[Part]:
    return list(zip(part[0].split(size), part[1].split(size), strict=True))


def accuracy(model: nn.Module, test: Part) -> float:
    with torch.no_grad():
        return float((model(test[0]).argmax(1) == test[1]).float().mean())


def simulate(
    strategy_name: str, args: argparse.Namespace, parts: list[Part], test: Part
) -> list[float]:
    """One Flower simulation: the global model's test accuracy after each round."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    init = make_model(args.width)
    graph = cipm.trace(init, test[0][:4])
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        k = int(context.node_config["partition-id"])
        model = make_model(args.width)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        server_round = int(msg.content["config"]["server-round"])
        train_classifier(
            model, batches(parts[k]), epochs=args.epochs, seed=1000 * server_round + k, lr=args.lr
        )
        if strategy_name == "learned":  # sorted by the meta-network, on this client's data
            model = cipm.federated.canonical_client(model, graph, batches(parts[k]))
        reply = RecordDict(
            {
                "arrays": ArrayRecord(cipm.federated.update_arrays(model)),
                "metrics": MetricRecord({"num-examples": len(parts[k][1])}),
            }
        )
        return Message(content=reply, reply_to=msg)

    accuracies: list[float] = []
    server_app = ServerApp()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = make_model(args.width)
        model.load_state_dict(arrays.to_torch_state_dict())
        if server_round > 0:
            accuracies.append(accuracy(model, test))
        return MetricRecord({"accuracy": accuracy(model, test)})

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        common: dict[str, Any] = {
            "fraction_evaluate": 0.0,
            "min_train_nodes": len(parts),
            "min_available_nodes": len(parts),
        }
        strategy = (
            cipm.federated.MatchedAveraging(model=init, graph=graph, **common)
            if strategy_name == "matched"
            else FedAvg(**common)  # learned: the clients sent canonical models
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(init.state_dict()),
            num_rounds=args.rounds,
            evaluate_fn=evaluate,
        )
        if len(result.train_metrics_clientapp) != args.rounds:  # a round had no client reply
            raise RuntimeError(f"{strategy_name}: clients failed; see the log above")

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(parts),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return accuracies


def bounded(name: str, args: argparse.Namespace, split: int) -> list[float] | None:
    """`simulate` in a child process (this script, run with --simulate) on label-skew draw
    `split`; None if it does not finish within --timeout seconds (Ray can hang where
    loopback networking is down)."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder, "accuracies.json")
        command = [sys.executable, __file__, *sys.argv[1:], "--simulate", name]
        command += ["--split-seed", str(split)]
        command += ["--result", str(result)]
        try:
            subprocess.run(command, timeout=args.timeout, check=True, stdout=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None
        return list(json.loads(result.read_text()))


def one_shot(args: argparse.Namespace, train: Part, test: Part, alpha: float) -> dict[str, float]:
    """Independently trained clients merged once; accuracies of each way of merging."""
    calibration = [train[0][i : i + 64] for i in range(0, 256, 64)]  # unlabeled, server-side
    rest = (train[0][256:], train[1][256:])
    parts = label_skew(*rest, args.one_shot_clients, alpha, seed=1)
    models = [
        train_classifier(
            make_model(args.one_shot_width, seed=10 + k),
            batches(p),
            epochs=args.one_shot_epochs,
            seed=k,
        )
        for k, p in enumerate(parts)
    ]
    graph = cipm.trace(models[0], train[0][:4])
    sizes = [len(p[1]) for p in parts]
    shares = [n / sum(sizes) for n in sizes]
    three = cipm.MatchConfig(passes=3)
    matched = cipm.federated.matched_average(models[0], models, graph, weights=sizes, config=three)
    own = [
        cipm.collect(m, graph, [p[0]], config=cipm.CollectConfig(progress=False))
        for m, p in zip(models, parts, strict=True)
    ]
    learned = cipm.federated.canonical_average(models, graph, own, weights=sizes)
    repaired = cipm.federated.matched_average(
        models[0],
        models,
        graph,
        weights=sizes,
        data=calibration,
        config=cipm.MatchConfig(repair=True, passes=3),
    )
    return {
        "best client": max(accuracy(m, test) for m in models),
        "worst client": min(accuracy(m, test) for m in models),
        "plain average": accuracy(cipm.merge(models, graph, weights=shares), test),
        "matched": accuracy(matched, test),
        "matched + REPAIR": accuracy(repaired, test),
        "learned co-canon.": accuracy(learned, test),
    }


def federation_arguments(
    parser: argparse.ArgumentParser, *, epochs: int = 20, lr: float = 1e-2
) -> None:
    """The rounds' setting: how many rounds and clients, the skew, local training, width."""
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.1, help="Dirichlet label skew")
    parser.add_argument("--epochs", type=int, default=epochs, help="local epochs per round")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--width", type=int, default=128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    federation_arguments(parser)
    parser.add_argument(
        "--only", default=",".join(STRATEGIES), help=f"comma-separated, of {STRATEGIES}"
    )
    parser.add_argument("--one-shot-clients", type=int, default=4)
    parser.add_argument("--one-shot-alpha", type=float, default=1.0)
    parser.add_argument("--one-shot-epochs", type=int, default=30)
    parser.add_argument("--one-shot-width", type=int, default=256)
    parser.add_argument("--no-one-shot", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per simulation")
    parser.add_argument("--out", type=Path, default=Path("out/federated_digits.png"))
    parser.add_argument("--splits", type=int, default=3, help="label-skew draws averaged")
    parser.add_argument("--simulate", help=argparse.SUPPRESS)  # the child process's part
    parser.add_argument("--split-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    if unknown := sorted(chosen - set(STRATEGIES)):
        parser.error(f"--only: unknown {unknown}; choose from {STRATEGIES}")
    names = [n for n in STRATEGIES if n in chosen]
    train_batches, test_batches = digits(batch=10_000)
    train, test = train_batches[0], test_batches[0]
    if args.simulate:
        parts = label_skew(*train, args.clients, args.alpha, seed=args.split_seed)
        args.result.write_text(json.dumps(simulate(args.simulate, args, parts, test)))
        return
    print(f"{args.clients} clients, label skew Dirichlet({args.alpha}), {args.splits} draws")
    for k, (_, y) in enumerate(label_skew(*train, args.clients, args.alpha, seed=0)):
        print(f"  draw 0, client {k}: {torch.bincount(y, minlength=10).tolist()}")
    runs: dict[str, list[list[float]]] = {}  # strategy -> one curve per draw
    for split in range(args.splits):
        for name in names:
            result = bounded(name, args, split)
            if result is None:
                print(f"{name}, draw {split}: did not finish within {args.timeout:.0f} s")
                continue
            runs.setdefault(name, []).append(result)
    curves = {n: torch.tensor(r).mean(0).tolist() for n, r in runs.items()}
    spread = {n: torch.tensor(r).std(0, unbiased=False).tolist() for n, r in runs.items()}
    print(f"\n{'round':>5s}" + "".join(f"{LABELS[n]:>20s}" for n in STRATEGIES))
    for r in range(args.rounds):
        cells = [
            f"{curves[n][r]:.1%} ± {spread[n][r]:.1%}" if n in curves else "-" for n in STRATEGIES
        ]
        print(f"{r + 1:5d}" + "".join(f"{c:>20s}" for c in cells))
    for name in runs:
        finals = " ".join(f"{run[-1]:.1%}" for run in runs[name])
        print(f"after round {args.rounds}, {LABELS[name]} per draw: {finals}")
    for name in ("matched", "learned"):
        if name in runs and "fedavg" in runs and len(runs[name]) == len(runs["fedavg"]):
            gaps = [a[-1] - b[-1] for a, b in zip(runs[name], runs["fedavg"], strict=True)]
            ahead = sum(g > 0 for g in gaps)
            print(
                f"{name} - FedAvg after {args.rounds} rounds: {100 * sum(gaps) / len(gaps):+.1f} "
                f"points on average, ahead in {ahead} of {len(gaps)} draws"
            )
    shots = {}
    if not args.no_one_shot:
        for label, alpha in (
            ("IID", 0.0),
            (f"label skew {args.one_shot_alpha}", args.one_shot_alpha),
        ):
            shots[label] = one_shot(args, train, test, alpha)
        print(f"\none-shot merging of {args.one_shot_clients} independently trained clients")
        print(f"{'split':22s}" + "".join(f"{k:>18s}" for k in next(iter(shots.values()))))
        for label, row in shots.items():
            print(f"{label:22s}" + "".join(f"{v:18.1%}" for v in row.values()))
    plot(curves, shots, args.out)
    print(f"\nwrote {args.out}")


def plot(curves: dict[str, list[float]], shots: dict[str, dict[str, float]], path: Path) -> None:
    fig = figure(figsize=(9.0, 3.4))
    left, right = fig.subplots(1, 2)
    for name, accs in curves.items():
        left.plot(range(1, len(accs) + 1), accs, marker="o", ms=3, label=name)
    left.set(title="federated rounds, label skew (mean of draws)", xlabel="round")
    left.set(ylabel="test accuracy")
    left.legend(fontsize=8)
    width = 0.8 / max(len(shots), 1)
    for i, (label, row) in enumerate(shots.items()):
        xs = [j + i * width for j in range(len(row))]
        right.bar(xs, list(row.values()), width=width, label=label)
        right.set_xticks(
            [j + width * (len(shots) - 1) / 2 for j in range(len(row))],
            list(row),
            rotation=20,
            fontsize=7,
        )
    right.set(title="one-shot merging", ylabel="test accuracy")
    if shots:
        right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
