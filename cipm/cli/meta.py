"""`cipm meta zoo|train|eval`: build the zoo, train a meta-analysis network, evaluate it."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from cipm.errors import CipmError
from cipm.io import figure, save_figure
from cipm.meta.config import FitConfig, MetaConfig

__all__ = ["add_parser", "run"]

DEFAULT_ZOO = Path("out/zoo")


def add_parser(sub: Any) -> None:
    meta = sub.add_parser("meta", help="the meta-analysis network: build its zoo, train, evaluate")
    verbs = meta.add_subparsers(dest="meta_command", required=True)
    zoo = verbs.add_parser("zoo", help="train the zoo of small models (cached)")
    zoo.add_argument(
        "folder", type=Path, nargs="?", default=DEFAULT_ZOO,
        help=f"where the zoo is kept (default {DEFAULT_ZOO}); models already there are reused",
    )  # fmt: skip
    train = verbs.add_parser("train", help="train a network on the zoo's training split")
    train.add_argument("-o", "--output", type=Path, required=True, help="FILE.safetensors")
    train.add_argument(
        "--zoo", type=Path, default=DEFAULT_ZOO, help="a zoo folder (the default zoo is built "
        "there first if it holds none)"
    )  # fmt: skip
    train.add_argument(
        "--objective", action="append", default=[], metavar="NAME=WEIGHT",
        help="an objective and its weight (repeat; default compression=1 correlation=0.5 "
        "stability=0.1)",
    )  # fmt: skip
    train.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    train.add_argument("--batch", type=int, default=4, help="zoo models per step")
    train.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    train.add_argument("--seed", type=int, default=0, help="weights and draws of models")
    train.add_argument("--hidden", type=int, default=32, help="width of a unit's embedding")
    train.add_argument("--layers", type=int, default=3, help="rounds of message passing")
    train.add_argument("--checkpoint", type=Path, help="resumed from if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate = verbs.add_parser("eval", help="compare a network with the analytic policies")
    evaluate.add_argument("network", help="FILE.safetensors, or 'pretrained'")
    evaluate.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="the zoo folder")
    evaluate.add_argument("--split", action="append", help="zoo splits (default: held-out)")
    evaluate.add_argument("--ratio", type=float, default=0.5, help="pruning ratio compared")


def run(args: argparse.Namespace) -> int:
    if args.meta_command == "zoo":
        from cipm.meta.zoo import build_zoo

        build_zoo(args.folder)
        print(f"zoo ready in {args.folder}")
        return 0
    if args.meta_command == "train":
        return _train(args)
    return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from cipm.meta.analyzer import MetaAnalyzer
    from cipm.meta.evaluate import disjoint_pairs, evaluate_pairs, evaluate_specimens, table
    from cipm.meta.zoo import SPLITS, family_data, load_zoo

    meta = (
        MetaAnalyzer.pretrained()
        if args.network == "pretrained"
        else MetaAnalyzer.load(args.network)
    )
    splits = args.split or [s for s in SPLITS if s != "train"]
    zoo = load_zoo(args.zoo, splits)
    test = {f: family_data(f)[1] for f in {s.spec.family for s in zoo}}
    rows = evaluate_specimens(meta, zoo, test, ratio=args.ratio)
    print(table(rows, evaluate_pairs(meta, disjoint_pairs(zoo)), args.ratio))
    return 0


def _train(args: argparse.Namespace) -> int:
    from cipm.meta.analyzer import MetaAnalyzer
    from cipm.meta.zoo import build_zoo, load_zoo

    if args.output.suffix != ".safetensors":
        raise CipmError(f"-o {args.output}: a meta-network is written as FILE.safetensors")
    objectives = dict(_weight(o) for o in args.objective) or None
    if not (args.zoo / "index.json").is_file():  # no zoo there yet: the default one
        build_zoo(args.zoo, progress=not args.quiet)
    zoo = load_zoo(args.zoo, "train")
    meta = MetaAnalyzer(MetaConfig(hidden=args.hidden, layers=args.layers), seed=args.seed)
    start = time.perf_counter()
    settings = FitConfig(
        steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, progress=not args.quiet
    )
    history = meta.fit(zoo, objectives, checkpoint=args.checkpoint, config=settings)
    elapsed = time.perf_counter() - start
    meta.save(args.output)
    curve = args.output.with_suffix(".csv")
    names = list(history.rows[0]) if history.rows else []
    with open(curve, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *names])
        for i, row in enumerate(history.rows):
            writer.writerow([i, *(f"{row[n]:.6f}" for n in names)])
    save_figure(_plot(history.rows, names), args.output.with_suffix(".png"))
    size = args.output.stat().st_size
    print(f"trained on {len(zoo)} zoo models, {args.steps} steps in {elapsed:.0f} s")
    head, tail = history.rows[:10], history.rows[-10:]
    for n in names:
        before, after = (sum(r[n] for r in rows) / len(rows) for rows in (head, tail))
        print(f"  {n:>16}: {before:.4f} (first 10 steps) -> {after:.4f} (last 10)")
    print(f"wrote {args.output} ({size / 1024:.0f} KiB), {curve}, {curve.with_suffix('.png')}")
    return 0


def _plot(rows: list[Any] | tuple[Any, ...], names: list[str]) -> Any:
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    window = max(1, len(rows) // 30)
    for n in names:
        values = [r[n] for r in rows]
        parts = [values[max(0, i - window) : i + 1] for i in range(len(values))]
        ax.plot([sum(p) / len(p) for p in parts], label=n)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (1: a random order)")
    ax.set_title("meta-analysis network training")
    ax.legend()
    fig.tight_layout()
    return fig


def _weight(spec: str) -> tuple[str, float]:
    name, _, weight = spec.rpartition("=")
    try:
        return name, float(weight)
    except ValueError:
        raise CipmError(f"--objective takes NAME=WEIGHT, not {spec!r}") from None
