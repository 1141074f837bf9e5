"""Hugging Face model folders as a model source: a folder with a ``config.json`` (what
``save_pretrained`` writes, and what the Hugging Face exporter writes) is loaded with the
class its config names (``architectures``), or ``AutoModel``, from local files only.

transformers is imported when such a folder is loaded, not before.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cipm import CipmError
from cipm.plugin import ModelSource, hookimpl


def is_huggingface_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_huggingface(path: Path) -> Any:
    """The model in a Hugging Face folder, built by the class its config names.

    Raises:
        CipmError: transformers is not installed, has no such class, or cannot load it.
    """
    try:
        import transformers
    except ImportError as e:
        raise CipmError(
            "Hugging Face folders need transformers: pip install 'cipm[formats]'"
        ) from e
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise CipmError(f"cannot load the Hugging Face model in {path}: {e}") from e
    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else transformers.AutoModel
    if cls is None:
        raise CipmError(f"{path}: transformers has no model class {names[0]!r}")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a local folder: no bar per load
    try:
        return cls.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise CipmError(f"cannot load the Hugging Face model in {path}: {e}") from e
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


@hookimpl
def cipm_model_sources() -> Mapping[str, ModelSource]:
    return {
        "huggingface": ModelSource(
            accepts=is_huggingface_folder,
            load=load_huggingface,
            description="a Hugging Face model folder (config.json and weights)",
        )
    }
