"""What cipm reads from the data a caller passes: batches, the model inputs in them, losses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from cipm.errors import CipmError

__all__ = ["Inputs", "Loss", "as_args", "batch_list", "check_loader", "model_inputs", "progress"]

Inputs = Callable[[Any], Any]  # a batch -> the model's inputs in it
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean loss


def model_inputs(batch: Any) -> Any:
    """The model inputs in a batch: a tensor, the first item of an (inputs, targets) pair,
    or a dict of keyword inputs."""
    if isinstance(batch, tuple | list):
        if not batch:
            raise CipmError("an empty batch has no model inputs")
        return batch[0]
    return batch


def as_args(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of a model call: a tensor, a tuple/list of positional
    inputs, or a dict of keyword inputs."""
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, tuple | list):
        return tuple(inputs), {}
    return (inputs,), {}


def check_loader(data: Any, what: str) -> Iterable[Any]:
    """`data`, once it is known to be an iterable of batches (a DataLoader, a list); else a
    CipmError."""
    if data is None:
        raise CipmError(f"{what}: no data; pass an iterable of batches (a DataLoader, a list)")
    if isinstance(data, torch.Tensor):
        raise CipmError(
            f"{what}: the data is one tensor, which iterates row by row; pass a list of "
            "batches ([x], or list(x.split(64)))"
        )
    if isinstance(data, dict | str | bytes) or not isinstance(data, Iterable):
        raise CipmError(
            f"{what}: the data must be an iterable of batches, got {type(data).__name__}"
        )
    return data


def batch_list(data: Iterable[Any], what: str) -> list[Any]:
    """The batches of `data` as a list, for work that reads them more than once.

    Raises:
        CipmError: `data` is not an iterable of batches, or yielded none (naming `what`
            needed them).
    """
    check_loader(data, what)
    batches = list(data)
    if not batches:
        raise CipmError(f"{what}: the data yielded no batches; it needs at least one")
    return batches


def progress(loader: Iterable[Any], show: bool, what: str) -> Iterable[Any]:
    """`loader` with a progress bar (batches) unless `show` is False."""
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return tqdm(loader, total=total, desc=what, unit="batch", disable=not show, leave=False)
