"""The `cipm` command line: inspect, canonicalize, prune or export a model, list the plugins,
train the meta-analysis network (`cipm.cli.meta`)."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from cipm.cli import meta
from cipm.cli.saving import (
    Request,
    check_output,
    check_pickle,
    format_for,
    kinds_that_fit,
    save_result,
)
from cipm.cli.sources import batches, example_input, formats, load_model, load_tensors
from cipm.discovery.tracer import trace
from cipm.errors import CipmError, CipmWarning
from cipm.examples import catalog
from cipm.exporting import export, exporters
from cipm.exporting.check import outputs
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.hooks.manager import list_plugins
from cipm.io import write_text_atomic
from cipm.ordering.canonical import canonical_permutation
from cipm.pruning.problem import PruneConfig
from cipm.pruning.result import PruneReport
from cipm.pruning.structured import prune, prune_methods
from cipm.statistics.collection import CollectConfig, collect
from cipm.statistics.group import Statistics
from cipm.tensors.modify import permute

__all__ = ["main"]

EXAMPLES = """examples:
  cipm inspect resnet20                        a built-in example: its groups, a float64 check
  cipm inspect model.safetensors --factory mypkg.models:build --input 1,3,32,32
  cipm canonicalize hf_model/ --input ids.pt -o canonical/
  cipm prune model.pt2 --input 1,3,32,32 --ratio 0.5 --data calibration.pt -o small.pt2
  cipm prune hf_model/ --input ids.pt --ratio 0.5 --method magnitude -o small_hf/
  cipm export model.pt2 --input 1,3,32,32 -o model.onnx
  cipm plugins --block torch_attention
  cipm meta train -o meta.safetensors          train a meta-analysis network on the zoo

models: a Hugging Face folder, safetensors (or state-dict .pt) weights with --factory
MODULE:CALLABLE that builds the model, a torch.export archive (.pt2), or a built-in example
(cipm inspect --help lists them). A whole pickled model (torch.save(model)) is loaded only
with --unsafe-pickle: unpickling runs any code the file holds. --input and --data files are
loaded as tensors only. Results are written atomically: -o FILE.pt2 as a torch.export
archive (no pickle needed to load it), FILE.onnx (checked in onnxruntime), FILE.safetensors
(weights), a folder for a Hugging Face model (config at the pruned sizes), any other name as
a pickled whole model, with --unsafe-pickle (reading it back needs it too). ONNX,
safetensors and folders carry the policy (a canonicalization's permutation) for
cipm.read_policy."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "plugins":
            print("\n".join(list_plugins(blocked_plugins=args.block)))
            return 0
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "export":
            return _export(args)
        if args.command == "meta":
            return meta.run(args)
        return _modify(args)
    except CipmError as e:
        print(f"cipm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file cipm had to write or read, failing after the checks
        where = f" ({e.filename})" if e.filename else ""
        print(f"cipm: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cipm",
        description="Find the permutation symmetries of a PyTorch model and use them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    examples = ", ".join(sorted({**catalog.MODELS, **catalog.LARGE}))
    inspect = sub.add_parser("inspect", help="trace a model and print its groups")
    _model_args(inspect, f"a model file or folder, or a built-in example: {examples}")
    inspect.add_argument("--json", type=Path, help="also write the symmetry graph as JSON")
    inspect.add_argument(
        "--no-check", action="store_true", help="skip checking a random permutation in float64"
    )
    for name, what in (("canonicalize", "put a model's units in canonical order"),
                       ("prune", "prune a model into a smaller one")):  # fmt: skip
        cmd = sub.add_parser(name, help=what)
        _model_args(cmd, f"the model: {formats()}")
        cmd.add_argument("-o", "--output", type=Path, required=True, help="where to save it")
    prune_cmd = sub.choices["prune"]
    prune_cmd.add_argument("--ratio", type=float, help="fraction of units to remove per group")
    prune_cmd.add_argument(
        "--size", action="append", default=[], metavar="GROUP=UNITS",
        help="units to keep in a group (names: cipm inspect MODEL)",
    )  # fmt: skip
    prune_cmd.add_argument(
        "--method", help="a pruning method: fold, magnitude, activation, learned or a "
        "plugin's (default: fold with --data, magnitude without)"
    )  # fmt: skip
    prune_cmd.add_argument(
        "--data", type=Path, help="calibration inputs (.pt: a tensor of samples, or a list of "
        "batches); needed by every method that folds or reads statistics"
    )  # fmt: skip
    prune_cmd.add_argument(
        "--batch", type=int, help="batch size for a tensor --data (default 64; for a .pt2 "
        "archive, whose shapes are fixed, the --input batch size)"
    )  # fmt: skip
    prune_cmd.add_argument(
        "--kinds", help="group kinds --ratio prunes, comma-separated: hidden, channels, heads, "
        "residual (default the first three, those the output format can describe)"
    )  # fmt: skip
    prune_cmd.add_argument("--quiet", action="store_true", help="no progress bars")
    export_cmd = sub.add_parser(
        "export", help="write a model as ONNX, safetensors or a Hugging Face folder"
    )
    _model_args(export_cmd, f"the model: {formats()}")
    export_cmd.add_argument(
        "-o", "--output", type=Path, required=True,
        help="FILE.onnx, FILE.safetensors, or a folder for a Hugging Face model",
    )  # fmt: skip
    export_cmd.add_argument(
        "--format", help="a format name (cipm.exporters()); default: from the -o name"
    )
    plugins = sub.add_parser("plugins", help="list the loaded plugins")
    plugins.add_argument("--block", action="append", default=[], help="plugin name to block")
    meta.add_parser(sub)
    return parser


def _model_args(cmd: argparse.ArgumentParser, what: str) -> None:
    cmd.add_argument("model", help=what)
    cmd.add_argument(
        "--input",
        help="example input to trace with: a shape such as 1,3,32,32 (random floats) or a .pt "
        "file of a tensor or a dict of keyword inputs (needed unless MODEL is a built-in example)",
    )
    cmd.add_argument("--factory", metavar="MODULE:CALLABLE", help="builds the model for weights")
    cmd.add_argument(
        "--unsafe-pickle", action="store_true",
        help="allow loading a whole pickled model: this runs any code the file holds",
    )  # fmt: skip


def _source(args: argparse.Namespace, needs_input: bool = True) -> tuple[torch.nn.Module, Any]:
    """The model and its example input (None if not `needs_input` and none was given)."""
    if args.model in {**catalog.MODELS, **catalog.LARGE} and args.input is None:
        return catalog.build(args.model)
    if args.input is None and not needs_input:
        model = load_model(args.model, factory=args.factory, unsafe_pickle=args.unsafe_pickle)
        return model, None
    if args.input is None:
        if not Path(args.model).exists():
            raise CipmError(f"model {args.model} does not exist (give {formats()})")
        raise CipmError(f"{args.model}: give --input (a shape like 1,3,32,32 or a .pt file)")
    example = example_input(args.input)
    return load_model(args.model, factory=args.factory, unsafe_pickle=args.unsafe_pickle), example


def _inspect(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_output(args.json, inputs=(args.model, args.input))
    model, x = _source(args)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = trace(model, x)
    elapsed = time.perf_counter() - start
    print(graph)
    print(f"\ntraced in {elapsed:.2f} s")
    if args.json is not None:
        write_text_atomic(args.json, graph.to_json(indent=1))
        print(f"wrote {args.json}")
    if not args.no_check and x is not None:
        model, x = model.double(), pytree.tree_map(_float64, x)
        permuted = permute(model, graph.random_permutation(seed=0))
        try:
            pairs = list(zip(outputs(model, x), outputs(permuted, x), strict=True))
        except Exception as e:  # traced, yet it does not run on --input in float64
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CipmError(f"the float64 check cannot run the model on --input: {why}") from e
        floating = [(a, b) for a, b in pairs if a.is_floating_point() and a.numel()]
        err = max((float((a - b).abs().max()) for a, b in floating), default=0.0)
        moved = sum(g.size for g in graph)
        print(
            f"random permutation of all {len(graph)} groups ({moved} units): "
            f"max |output difference| in float64 = {err:.1e}"
        )
    return 0


def _float64(value: Any) -> Any:
    floating = isinstance(value, torch.Tensor) and value.is_floating_point()
    return value.double() if floating else value


def _export(args: argparse.Namespace) -> int:
    """export a model to a file of one of the installed formats (atomically)."""
    check_output(args.output, folder_ok=True, inputs=(args.model, args.input))
    format_ = args.format
    if format_ is not None and format_ not in exporters():
        raise CipmError(f"--format {format_}: installed formats are {sorted(exporters())}")
    needs_input = format_ == "onnx" or (format_ is None and args.output.suffix == ".onnx")
    model, example = _source(args, needs_input=needs_input)
    export(model, args.output, example, format=format_)
    print(f"wrote {args.output}")
    return 0


def _modify(args: argparse.Namespace) -> int:
    """canonicalize / prune a model and save the result (atomically)."""
    check_output(
        args.output,
        folder_ok=not args.output.suffix,
        inputs=(args.model, args.input, getattr(args, "data", None)),
    )
    check_pickle(args.output, args.unsafe_pickle)
    sizes: dict[str, int] = {}
    data: list[Any] | None = None
    raw: Any = None  # --data as loaded, batched once the model's shapes are known
    if args.command == "prune":
        sizes = dict(_size(s) for s in args.size)
        if args.ratio is None and not sizes:
            raise CipmError("say how much to prune: --ratio FRACTION or --size GROUP=UNITS")
        name = args.method or ("fold" if args.data is not None else "magnitude")
        methods = prune_methods()
        if name not in methods:
            raise CipmError(f"--method {name}: pruning methods are {sorted(methods)}")
        if methods[name].needs_data() and args.data is None:
            raise CipmError(f"--method {name} needs --data (calibration inputs)")
        raw = load_tensors(args.data, "data") if args.data else None
    model, example = _source(args)
    format_for(model, args.output)  # a format for it, before the work
    if raw is not None:
        fixed = Path(args.model).suffix == ".pt2"  # a traced program: its shapes are fixed
        size = args.batch if args.batch is not None else (_leading(example) if fixed else 64)
        data = batches(raw, size, whole=fixed and args.batch is None)
    graph = trace(model, example)
    if args.command == "prune":
        request = Request(args.ratio, sizes, tuple(args.kinds.split(",")) if args.kinds else None)
        kinds = kinds_that_fit(model, graph, args.output, request)
    policy: Permutation | PruneReport
    if args.command == "canonicalize":
        policy = canonical_permutation(model, graph)
        result = permute(model, policy)
    else:
        show = not args.quiet and sys.stderr.isatty()
        stats: Statistics | SymmetryGraph = graph  # a fold with data reads the data itself
        if methods[name].needs_statistics:
            stats = collect(model, graph, data or [], config=CollectConfig(progress=show))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CipmWarning)  # groups kept whole: said below
            pruned = prune(
                model, stats, ratio=args.ratio, sizes=sizes, method=name, data=data,
                config=PruneConfig(kinds=kinds, example_inputs=example, progress=show),
            )  # fmt: skip
        result, policy = pruned.model, pruned.report
        for kept in pruned.report.kept_whole:
            where = kept.module or "the model"
            print(f"kept whole: {kept.group} ({where} fails at its new size: {kept.reason})")
    save_result(result, example, args.output, policy)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, result))
    print(f"{args.command}: {len(graph)} groups; {before:,} -> {after:,} parameters")
    print(f"wrote {args.output}")
    return 0


def _leading(example: Any) -> int:
    """The batch size of example inputs: the first dim of their first tensor."""
    first = next(iter(pytree.tree_leaves(example)), None)
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 64


def _size(spec: str) -> tuple[str, int]:
    name, _, units = spec.rpartition("=")
    if not name or not units.isdigit():
        raise CipmError(f"--size takes GROUP=UNITS, not {spec!r}")
    return name, int(units)


if __name__ == "__main__":
    raise SystemExit(main())
