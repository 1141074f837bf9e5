"""Where models are read from: what a model source is (`ModelSource`) and the registry of
them (`model_sources`), filled by the `cipm_model_sources` hook.

The command line reads a model from a file or folder through this registry before its own
formats (weights with ``--factory``, a torch.export archive, a pickle): a plugin that knows a
format (a Hugging Face model folder, a checkpoint layout of some framework) says which paths
are its and builds the model from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from cipm.hooks.manager import plugin_table

__all__ = ["ModelSource", "model_sources", "source_for"]


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


def model_sources(blocked_plugins: Iterable[str] = ()) -> dict[str, ModelSource]:
    """Every installed model source by name, leaving the `blocked_plugins` plugins out.

    Raises:
        PluginError: a plugin's `cipm_model_sources` returned something that is not a
            `ModelSource`.
    """
    return plugin_table(
        "cipm_model_sources",
        "model source",
        blocked_plugins,
        check=lambda s: isinstance(s, ModelSource),
    )


def source_for(path: Path, blocked_plugins: Iterable[str] = ()) -> ModelSource | None:
    """The first model source (in plugin call order) that accepts `path`, or None."""
    for source in model_sources(blocked_plugins).values():
        if source.accepts(path):
            return source
    return None
