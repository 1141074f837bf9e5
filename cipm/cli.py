"""Command line: ``cipm inspect`` a built-in example model, ``cipm plugins`` to list plugins."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from cipm import zoo
from cipm.errors import CipmError
from cipm.io import write_text_atomic
from cipm.modify import permute
from cipm.plugins import list_plugins
from cipm.tracer import trace

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
    plugins = sub.add_parser("plugins", help="list the loaded plugins")
    plugins.add_argument("--block", action="append", default=[], help="plugin name to block")
    args = parser.parse_args(argv)
    try:
        if args.command == "plugins":
            print("\n".join(list_plugins(blocked=args.block)))
            return 0
        return _inspect(args.model, args.json, check=not args.no_check)
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


if __name__ == "__main__":
    raise SystemExit(main())
