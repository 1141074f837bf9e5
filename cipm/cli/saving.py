"""Where the command line writes: the output path, checked before any work, and the result,
saved in the format its name asks for (atomically, as every writer of cipm's does)."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cipm.discovery.program import save_program
from cipm.errors import CipmError
from cipm.exporting import export, exporters
from cipm.exporting.exporter import choose
from cipm.exporting.formats import Exporter
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.io import check_parent, check_replaceable, save_model
from cipm.pruning.result import PruneReport
from cipm.pruning.shapes import sized_copy
from cipm.pruning.targets import PRUNABLE, kinds_of, targets

__all__ = [
    "Request",
    "check_output",
    "check_pickle",
    "format_for",
    "kinds_that_fit",
    "pickles",
    "save_result",
]


@dataclass(frozen=True)
class Request:
    """What `cipm prune` was asked to prune: a ratio of the `kinds` (None: the defaults),
    and units to keep per named group."""

    ratio: float | None
    sizes: Mapping[str, int]
    kinds: tuple[str, ...] | None


def check_output(path: Path, folder_ok: bool = False, inputs: Iterable[Any] = ()) -> None:
    """Fail now, before any work, if the result could not be written to `path` (a folder
    only if `folder_ok`, and only one that cipm may replace), or would overwrite one of the
    `inputs` (paths the command reads; other values are ignored)."""
    if path.is_dir() and not folder_ok:
        raise CipmError(f"-o {path} is a directory; give a file name")
    target = path.resolve()
    for given in inputs:
        if isinstance(given, str | os.PathLike) and Path(given).exists():
            source = Path(given).resolve()
            if source == target or target in source.parents:
                raise CipmError(
                    f"-o {path} would overwrite {given}, which this command reads: give "
                    "another output path"
                )
    if path.is_dir():
        check_replaceable(path)
    check_parent(path)
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".cipm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CipmError(f"cannot write -o {path}: {e.strerror or e}") from None


def check_pickle(path: Path, unsafe_pickle: bool) -> None:
    """Writing a pickled whole model takes the opt-in that reading one back does."""
    if pickles(path) and not unsafe_pickle:
        raise CipmError(
            f"-o {path} would be a pickled whole model, which cipm reads back only with "
            f"--unsafe-pickle: write {path.with_suffix('.pt2')} (a torch.export archive), "
            ".safetensors, .onnx or a folder (a Hugging Face model), or pass --unsafe-pickle"
        )


def format_for(model: torch.nn.Module, path: Path) -> Exporter | None:
    """The exporter that will write `model` to `path` (None: a .pt2 archive or a pickle);
    a CipmError now, before the work, if there is none."""
    if path.suffix == ".pt2" or pickles(path):
        return None
    return choose(model, path, None, exporters())[1]


def kinds_that_fit(
    model: torch.nn.Module, graph: SymmetryGraph, path: Path, request: Request
) -> tuple[str, ...]:
    """The group kinds to prune, checked before the work against what the format `path`
    asks for can hold: a copy pruned to the requested sizes on the meta device is asked to
    the format's `Exporter.fits`. The kinds asked for (`request.kinds`) must fit; without
    them, the default kinds that do are chosen (what is left out is said), so a Hugging Face
    folder gets a model its config can describe.

    Raises:
        CipmError: the kinds asked for, or every choice of the default ones, do not fit.
    """
    wanted = request.kinds or tuple(k.value for k in PRUNABLE if graph.by_kind(k))
    exporter = format_for(model, path)
    fits = None if exporter is None else exporter.fits
    if fits is None:
        return wanted

    def why(kinds: tuple[str, ...]) -> str | None:
        sizes = targets(graph, request.ratio, request.sizes, kinds_of(kinds))
        return fits(sized_copy(model, graph, sizes))

    first = why(wanted)
    if first is None:
        return wanted
    if not request.kinds:
        for n in range(len(wanted) - 1, 0, -1):
            for kinds in itertools.combinations(wanted, n):
                if why(kinds) is None:
                    print(f"pruning {', '.join(kinds)} only (--kinds to choose): {first}")
                    return kinds
    raise CipmError(f"-o {path}: {first}")


def save_result(
    model: torch.nn.Module, example: Any, path: Path, policy: Permutation | PruneReport | None
) -> None:
    """A .pt2 path gets a torch.export archive; a path an exporter writes (.onnx,
    .safetensors, a folder for a Hugging Face model) that format, with the policy; any
    other a pickled whole model."""
    if path.suffix == ".pt2":
        save_program(model, example, path)
        return
    if not pickles(path):
        export(model, path, example, policy=policy)
        return
    try:
        save_model(model, path)
    except (RuntimeError, TypeError, AttributeError) as e:  # pickle refusing an object
        raise CipmError(
            f"the result cannot be pickled ({e}); write it as a torch.export archive: "
            f"-o {path.with_suffix('.pt2')}"
        ) from None


def pickles(path: Path) -> bool:
    """Whether `_save` writes `path` as a pickled whole model: a file name no format claims."""
    suffix = path.suffix.lower()
    claimed = {".pt2", *(s for e in exporters().values() for s in e.suffixes)}
    return bool(suffix) and suffix not in claimed
