"""What model file formats are to cipm: an `Exporter` writes one (given an `ExportJob`), a
`ModelSource` reads one. Plugins supply them (`cipm_exporters`, `cipm_model_sources`); the
registries are `cipm.exporting.exporter` and `cipm.exporting.sources`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cipm.exporting.policy import Policy

__all__ = ["ExportJob", "Exporter", "ModelSource"]


@dataclass(frozen=True)
class ExportJob:
    """One export: the model, its example inputs (None if not given), the policy to store
    (None if none) and the path the result will have once written."""

    model: torch.nn.Module
    example_inputs: Any
    policy: Policy | None
    target: Path


def _any_model(model: torch.nn.Module) -> bool:
    return True


@dataclass(frozen=True)
class Exporter:
    """A file format cipm can write.

    Attributes:
        write: ``write(job, path)`` writes `job`'s model to `path`, a temporary file (or,
            with ``folder=True``, an empty temporary folder) beside the target that cipm
            renames onto the target once `write` returns; raise a `CipmError` on failure.
        suffixes: file name endings this format is chosen for (``(".onnx",)``); a folder
            format is chosen for a path without a suffix instead.
        folder: the format is a folder of files, not one file.
        accepts: whether the format can hold this model (a folder format is chosen by path
            only for models it accepts).
        read_policy: ``read_policy(path)`` returns the policy JSON stored in a file of this
            format, or None if it holds none (None: the format stores no policy).
        description: one line for `cipm.exporters()` listings and the CLI.
        fits: ``fits(model)`` says why the format could not hold `model` as it is, or None
            if it can; cheap, and it reads shapes only, so the command line asks it of a copy
            sized on the meta device before long work (None: every model it accepts fits).
    """

    write: Callable[[ExportJob, Path], None]
    suffixes: tuple[str, ...] = ()
    folder: bool = False
    accepts: Callable[[torch.nn.Module], bool] = _any_model
    read_policy: Callable[[Path], str | None] | None = None
    description: str = ""
    fits: Callable[[torch.nn.Module], str | None] | None = None


@dataclass(frozen=True)
class ModelSource:
    """A file or folder format models are read from.

    Attributes:
        accepts: ``accepts(path)`` says whether `path` (which exists) is in this format; it
            looks at names and small files only and never raises.
        load: ``load(path)`` builds the model `path` holds; raise a `CipmError` saying what
            is wrong (and what to install, for a missing optional package) on failure.
        description: what the format is, as a noun phrase for listings and messages
            (``"a Hugging Face model folder (config.json and weights)"``).
    """

    accepts: Callable[[Path], bool]
    load: Callable[[Path], torch.nn.Module]
    description: str = ""
