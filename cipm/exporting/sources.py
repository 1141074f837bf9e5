"""Where models are read from: the registry of model sources (`model_sources`; what one is:
`cipm.exporting.formats.ModelSource`), filled by the `cipm_model_sources` hook.

The command line reads a model from a file or folder through this registry before its own
formats (weights with ``--factory``, a torch.export archive, a pickle): a plugin that knows a
format (a Hugging Face model folder, a checkpoint layout of some framework) says which paths
are its and builds the model from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cipm.exporting.formats import ModelSource
from cipm.hooks.manager import plugin_table

__all__ = ["model_sources", "source_for"]


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
