"""Atomic file writing: a reader never sees a half-written file, a failure leaves the old one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cipm.errors import CipmError

__all__ = ["figure", "save_exported", "save_figure", "save_model", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename."""
    with _atomic(path, ".tmp") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def figure(**kwargs: Any) -> Any:
    """A matplotlib `Figure` for a file: made without pyplot, so it touches neither the
    caller's backend (a notebook's stays as it is) nor pyplot's list of open figures.

    Raises:
        CipmError: matplotlib is not installed (``pip install cipm[plot]``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise CipmError("plots need matplotlib: pip install 'cipm[plot]'") from e
    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (temporary file, then rename)."""
    with _atomic(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` a whole model (class and weights) atomically: temporary file, rename."""
    import torch

    with _atomic(path, ".tmp") as tmp:
        torch.save(model, tmp)
    return Path(path)


def save_exported(model: Any, example_inputs: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.export`` `model` on `example_inputs` and save the archive (.pt2) atomically:
    a file that loads with ``torch.export.load`` and needs no pickle."""
    import torch

    from cipm.discovery.export import export

    program = export(model, example_inputs, warn_training=False)
    with _atomic(path, ".pt2") as tmp:
        torch.export.save(program, tmp)
    return Path(path)


@contextmanager
def _atomic(path: str | os.PathLike[str], suffix: str) -> Iterator[str]:
    """A temporary file beside `path` (with a plain file's mode) to write; renamed onto
    `path` if the block succeeds, removed either way."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    _default_mode(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _default_mode(path: str) -> None:
    """Give a temporary file (mkstemp makes it 0600) the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
