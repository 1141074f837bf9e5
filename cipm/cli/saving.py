"""Where the command line writes: the output path, checked before any work, and the result,
saved in the format its name asks for (atomically, as every writer of cipm's does)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from cipm.discovery.program import save_program
from cipm.errors import CipmError
from cipm.exporting import export, exporters
from cipm.graph.symmetry import Permutation
from cipm.io import check_parent, check_replaceable, save_model
from cipm.pruning.result import PruneReport

__all__ = ["check_output", "pickles", "save_result"]


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
