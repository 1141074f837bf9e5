"""What cipm reads from the data a caller passes: batches, the model inputs in them, losses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from cipm.errors import CipmError

__all__ = ["Inputs", "Loss", "as_args", "batch_list", "model_inputs", "progress"]

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


def batch_list(data: Iterable[Any], what: str) -> list[Any]:
    """The batches of `data` as a list, for work that reads them more than once.

    Raises:
        CipmError: `data` yielded no batches (naming `what` needed them).
    """
    batches = list(data)
    if not batches:
        raise CipmError(f"{what}: the data yielded no batches; it needs at least one")
    return batches


def progress(loader: Iterable[Any], show: bool, what: str) -> Iterable[Any]:
    """`loader` with a progress bar (batches) unless `show` is False."""
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return tqdm(loader, total=total, desc=what, unit="batch", disable=not show, leave=False)
