"""Command line: inspect example models, canonicalize or prune saved models, list plugins.

    cipm inspect resnet20
    cipm canonicalize model.pt --input 1,3,32,32 -o canonical.pt
    cipm prune model.pt --input 1,3,32,32 --ratio 0.5 --data calibration.pt -o small.pt
    cipm plugins

Saved models are whole pickled modules (``torch.save(model, path)``), loaded with
``torch.load(weights_only=False)``: only load files you trust.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from cipm.discovery.tracer import trace
from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import list_plugins
from cipm.io import save_model, write_text_atomic
from cipm.ordering.canonical import canonicalize
from cipm.pruning.structured import METHODS, Method, prune
from cipm.statistics.collection import collect
from cipm.statistics.group import Statistics
from cipm.tensors.modify import permute
from cipm.testing import zoo

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cipm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="trace an example model and print its groups")
    inspect.add_argument("model", choices=sorted({**zoo.ZOO, **zoo.LARGE}), help="example model")
    inspect.add_argument("--json", type=Path, help="also write the symmetry graph as JSON")
    inspect.add_argument(
        "--no-check", action="store_true", help="skip checking a random permutation in float64"
    )
    for name, what in (("canonicalize", "put a saved model's units in canonical order"),
                       ("prune", "prune a saved model into a smaller one")):  # fmt: skip
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("model", type=Path, help="a model saved with torch.save(model, path)")
        cmd.add_argument(
            "--input",
            required=True,
            help="example input to trace with: a shape such as 1,3,32,32 (random floats) or "
            "a .pt file holding a tensor or a dict of keyword inputs",
        )
        cmd.add_argument("-o", "--output", type=Path, required=True, help="where to save it")
    prune_cmd = sub.choices["prune"]
    prune_cmd.add_argument("--ratio", type=float, help="fraction of units to remove per group")
    prune_cmd.add_argument(
        "--size", action="append", default=[], metavar="GROUP=UNITS", help="units to keep"
    )
    prune_cmd.add_argument("--method", choices=METHODS)
    prune_cmd.add_argument(
        "--data", type=Path, help="calibration inputs (.pt: a tensor of samples, or a list of "
        "batches); needed by merge (the default with data) and activation"
    )  # fmt: skip
    prune_cmd.add_argument("--batch", type=int, default=64, help="batch size for a tensor --data")
    plugins = sub.add_parser("plugins", help="list the loaded plugins")
    plugins.add_argument("--block", action="append", default=[], help="plugin name to block")
    args = parser.parse_args(argv)
    try:
        if args.command == "plugins":
            print("\n".join(list_plugins(blocked=args.block)))
            return 0
        if args.command == "inspect":
            return _inspect(args.model, args.json, check=not args.no_check)
        return _modify(args)
    except CipmError as e:
        print(f"cipm: error: {e}", file=sys.stderr)
        return 2


def _inspect(name: str, json_path: Path | None, *, check: bool) -> int:
    model, x = zoo.build(name)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = trace(model, x)
    elapsed = time.perf_counter() - start
    print(graph)
    print(f"\ntraced in {elapsed:.2f} s")
    if json_path is not None:
        write_text_atomic(json_path, graph.to_json(indent=1))
        print(f"wrote {json_path}")
    if check:
        model, x = model.double(), (x.double() if x.is_floating_point() else x)
        permuted = permute(model, graph.random_permutation(seed=0))
        with torch.no_grad():
            err = (model(x) - permuted(x)).abs().max().item()
        moved = sum(g.size for g in graph)
        print(
            f"random permutation of all {len(graph)} groups ({moved} units): "
            f"max |output difference| in float64 = {err:.1e}"
        )
    return 0


def _modify(args: argparse.Namespace) -> int:
    """canonicalize / prune a saved model and save the result (atomically)."""
    model = _load(args.model, "model")
    if not isinstance(model, torch.nn.Module):
        raise CipmError(f"{args.model} holds a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    example = _example(args.input)
    graph = trace(model, example)
    if args.command == "canonicalize":
        result = canonicalize(model, graph)
    else:
        data = _batches(_load(args.data, "data"), args.batch) if args.data else None
        method: Method = args.method or ("merge" if data is not None else "magnitude")
        stats: Statistics | SymmetryGraph = graph  # merge with data reads the data itself
        if method == "activation" and data is not None:
            stats = collect(model, graph, data)
        sizes = dict(_size(s) for s in args.size)
        result = prune(
            model, stats, ratio=args.ratio, sizes=sizes, method=method, data=data,
            example_inputs=example,
        )  # fmt: skip
    save_model(result, args.output)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, result))
    print(f"{args.command}: {len(graph)} groups; {before:,} -> {after:,} parameters")
    print(f"wrote {args.output}")
    return 0


def _load(path: Path, what: str) -> object:
    if not path.is_file():
        raise CipmError(f"{what} file {path} does not exist")
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:
        raise CipmError(f"cannot load {what} from {path}: {e}") from e


def _example(spec: str) -> object:
    if spec.endswith(".pt"):
        return _load(Path(spec), "input")
    try:
        shape = [int(n) for n in spec.split(",")]
    except ValueError:
        raise CipmError(
            f"--input must be a shape like 1,3,32,32 or a .pt file, not {spec!r}"
        ) from None
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _batches(data: object, batch: int) -> list[object]:
    if isinstance(data, torch.Tensor):
        return list(data.split(batch))
    if isinstance(data, list | tuple) and data:
        return list(data)
    raise CipmError("--data must hold a tensor of samples or a non-empty list of batches")


def _size(spec: str) -> tuple[str, int]:
    name, _, units = spec.rpartition("=")
    if not name or not units.isdigit():
        raise CipmError(f"--size takes GROUP=UNITS, not {spec!r}")
    return name, int(units)


if __name__ == "__main__":
    raise SystemExit(main())
