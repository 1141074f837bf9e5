"""A model as an ATen program: `torch.export` in eval semantics (leaving the model as it came),
and saved as a ``.pt2`` archive. (`cipm.export` writes deployable files; this is the trace.)"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from cipm.batches import as_args
from cipm.errors import CipmWarning, TraceError
from cipm.io import atomic_file

__all__ = ["eval_semantics", "program_of", "save_program"]


def program_of(
    model: torch.nn.Module, inputs: Any, *, warn_training: bool = True
) -> ExportedProgram:
    """`torch.export.export(strict=False)` of `model` on `inputs`, in eval semantics.

    Raises:
        TraceError: the export failed; its error is chained as the cause.
    """
    args, kwargs = as_args(inputs)
    with eval_semantics(model, warn=warn_training):
        try:
            return torch.export.export(model, args, kwargs, strict=False)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise TraceError(
                f"torch.export could not trace {type(model).__name__}: {type(e).__name__}: {first}"
            ) from e


@contextlib.contextmanager
def eval_semantics(model: torch.nn.Module, *, warn: bool = True) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each one's mode."""
    modes = {m: m.training for m in model.modules()}
    if warn and any(modes.values()):
        warnings.warn(
            f"{type(model).__name__} is in training mode; tracing it in eval semantics "
            "(dropout off, BatchNorm using running statistics). The model's mode is unchanged.",
            CipmWarning,
            stacklevel=5,
        )
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def save_program(model: torch.nn.Module, example_inputs: Any, path: str | os.PathLike[str]) -> Path:
    """`program_of` `model` on `example_inputs`, saved as a ``.pt2`` archive atomically: a file
    that loads with ``torch.export.load`` and needs no pickle."""
    program = program_of(model, example_inputs, warn_training=False)
    with atomic_file(path, ".pt2") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        torch.export.save(program, tmp)
    return Path(path)
