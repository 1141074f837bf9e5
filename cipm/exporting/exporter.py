"""Which exporter writes a given path: the registry behind `cipm.export`, filled by the
`cipm_exporters` hook (what an exporter is: `cipm.exporting.formats`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from cipm.errors import CipmError
from cipm.exporting.formats import Exporter
from cipm.hooks.manager import plugin_table

__all__ = ["choose", "exporters"]


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
        suffix = path.suffix.lower()
        other = [n for n, e in table.items() if suffix in e.suffixes and n != format]
        if other and suffix not in table[format].suffixes:  # read back as the wrong format
            raise CipmError(
                f"{path} is named as a '{other[0]}' file, but format '{format}' would be written "
                f"into it: give a name ending in {list(table[format].suffixes) or 'no suffix'}"
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
