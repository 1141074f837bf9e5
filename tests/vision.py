"""torchvision's classification models for tests and benchmarks, without its C extension.

torchvision 0.28's wheel (the release for torch 2.13) links CUDA (``libc10_cuda``,
``libtorch_cuda``), so beside a CPU torch its C extension does not load and ``import
torchvision`` fails in ``torchvision/_meta_registrations.py`` (fake kernels for ``nms``,
``roi_align``, ... of that extension). Its model definitions are pure Python. So the Makefile
installs torchvision apart from the venv's site-packages (``pip install --no-deps --target
.venv/torchvision``), where nothing finds it by accident (``transformers`` imports any
torchvision it finds, and would fail the same way), and `models` puts it on the path with an
empty stand-in for ``_meta_registrations``: detection ops stay unavailable, classification
models don't call them. Never used by the library itself.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

TARGET = Path(os.environ.get("CIPM_TORCHVISION", Path(__file__).parents[1] / ".venv/torchvision"))


def torchvision() -> Any:
    """The torchvision package, imported from `TARGET` (None if it is not installed there)."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if not (TARGET / "torchvision").is_dir():
        return None
    sys.path.insert(0, str(TARGET))
    stand_in = "torchvision._meta_registrations"
    sys.modules[stand_in] = types.ModuleType(stand_in)
    import torchvision as tv

    return tv


def classification_models() -> list[str]:
    """Names of torchvision's classification models (empty without torchvision)."""
    tv = torchvision()
    return [] if tv is None else sorted(tv.models.list_models(module=tv.models))


def build(name: str, **kwargs: Any) -> Any:
    """A classification model with random weights (no download)."""
    tv = torchvision()
    if tv is None:
        raise RuntimeError(f"torchvision is not installed in {TARGET}: run `make setup`")
    return tv.models.get_model(name, weights=None, **kwargs)
