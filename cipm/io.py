"""Atomic file writing: a reader never sees a half-written file, a failure leaves the old one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cipm.errors import CipmError

__all__ = [
    "FOLDER_MARK",
    "atomic_file",
    "atomic_path",
    "check_parent",
    "check_replaceable",
    "figure",
    "save_figure",
    "save_model",
    "write_text_atomic",
]

# a file in every folder cipm writes: such a folder (or an empty one) is all it will replace
FOLDER_MARK = ".cipm-output"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename."""
    with atomic_file(path, ".tmp") as tmp, open(tmp, "w", encoding="utf-8") as f:
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
    with atomic_file(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` a whole model (class and weights) atomically: temporary file, rename."""
    import torch

    with atomic_file(path, ".tmp") as tmp:
        torch.save(model, tmp)
    return Path(path)


def check_replaceable(folder: Path) -> None:
    """Raise a CipmError unless `folder` may be replaced whole by a folder cipm writes: it
    does not exist, is empty, or holds cipm's marker (cipm wrote it)."""
    if folder.is_dir() and any(folder.iterdir()) and not (folder / FOLDER_MARK).exists():
        raise CipmError(
            f"{folder} is a folder holding files cipm did not write, and writing a folder "
            "replaces it whole: give a new or empty folder (cipm never deletes what it did "
            "not write)"
        )


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or, with `folder`, an empty temporary folder) beside `path` to write
    into; renamed onto `path` if the block succeeds, removed either way.

    A file replaces the old one in one atomic rename. A folder replaces an existing folder by
    two renames (the old one aside, the new one in, the old one deleted), so a reader sees
    either the old folder or the new one, complete, and a failure puts the old one back. A
    folder cipm writes holds a marker file (`FOLDER_MARK`); cipm replaces only an empty
    folder or one it wrote, never one holding files of someone else's.

    Raises:
        CipmError: a folder is to replace a file, a file a folder, or a folder that holds
            files cipm did not write.
    """
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise CipmError(f"{target} is a file; this format writes a folder: give a folder path")
    if folder:
        check_replaceable(target)
    if not folder and target.is_dir():
        raise CipmError(f"{target} is a folder; this format writes a file: give a file name")
    if not folder:
        with atomic_file(target, ".tmp") as tmp:
            yield Path(tmp)
        return
    check_parent(target)
    made = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    _default_mode(str(made), 0o777)
    try:
        yield made
        (made / FOLDER_MARK).write_text("written by cipm; cipm may replace this folder\n")
        _replace_folder(made, target)
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` where `target` is, putting the old `target` back if that fails."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.rmdir(old)  # only its unique name is wanted
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str) -> Iterator[str]:
    """A temporary file beside `path` (with a plain file's mode, its name ending in
    `suffix`, for writers that go by it) to write; renamed onto `path` if the block
    succeeds, removed either way."""
    target = Path(path)
    check_parent(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    _default_mode(tmp)
    try:
        yield tmp
        _default_mode(tmp)  # a writer that made the file anew (safetensors does) made it 0600
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_parent(target: Path) -> None:
    """Raise a CipmError unless the folder `target` goes into exists (cipm creates none: a
    mistyped path is said, not made)."""
    parent = target.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise CipmError(f"cannot write {target}: {parent} {what} (create it first)")


def _default_mode(path: str, mode: int = 0o666) -> None:
    """Give a temporary file (mkstemp makes it 0600) the mode a plain open() would (or a
    temporary folder, made 0700, the mode of mkdir: `mode` 0o777)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)
