"""What an exporter is (`Exporter`), what it is asked to write (`ExportJob`), and which one
writes a given path: the registry behind `cipm.export`, filled by the `cipm_exporters` hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.exporting.policy import Policy
from cipm.hooks.manager import plugin_table

__all__ = ["ExportJob", "Exporter", "choose", "exporters"]


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
    """

    write: Callable[[ExportJob, Path], None]
    suffixes: tuple[str, ...] = ()
    folder: bool = False
    accepts: Callable[[torch.nn.Module], bool] = _any_model
    read_policy: Callable[[Path], str | None] | None = None
    description: str = ""


def exporters(blocked_plugins: Iterable[str] = ()) -> dict[str, Exporter]:
    """Every installed exporter by format name (``"onnx"``, ``"safetensors"``,
    ``"huggingface"``, and any plugin's), leaving the `blocked_plugins` plugins out.

    Raises:
        PluginError: a plugin's `cipm_exporters` returned something that is not an `Exporter`.
    """
    return plugin_table(
        "cipm_exporters", "exporter", blocked_plugins, check=lambda e: isinstance(e, Exporter)
    )


def choose(
    model: torch.nn.Module, path: Path, format: str | None, table: dict[str, Exporter]
) -> tuple[str, Exporter]:
    """The exporter `format` names, or else the one `path` calls for: its suffix, or for a
    path without one (or a folder) the folder format that accepts `model`.

    Raises:
        CipmError: an unknown format, one that cannot hold `model`, or a path that names none.
    """
    if format is not None:
        if format not in table:
            raise CipmError(f"no exporter for format {format!r}; installed: {sorted(table)}")
        if not table[format].accepts(model):
            raise CipmError(
                f"format '{format}' cannot hold a {type(model).__name__}: "
                f"{table[format].description or 'see cipm.exporters()'}"
            )
        return format, table[format]
    suffix = "" if path.is_dir() else path.suffix.lower()
    if suffix:
        for name, exporter in table.items():
            if suffix in exporter.suffixes and exporter.accepts(model):
                return name, exporter
    else:
        for name, exporter in table.items():
            if exporter.folder and exporter.accepts(model):
                return name, exporter
    known = sorted({s for e in table.values() for s in e.suffixes})
    what = f"suffix {suffix!r}" if suffix else "a folder"
    raise CipmError(
        f"no exporter writes {what} for a {type(model).__name__} ({path}); give a path ending "
        f"in one of {known}, or format= one of {sorted(table)}"
    )
