"""Rebuilding a model with resized tensors: same class, new shapes, attributes updated."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping

import torch

from cipm.errors import CipmError, ResizeError
from cipm.hooks.manager import resized

__all__ = ["with_tensors"]


def with_tensors(
    model: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    blocked_plugins: Iterable[str] = (),
) -> torch.nn.Module:
    """A copy of `model` whose parameters and buffers named in `tensors` hold those values.

    The copy holds the given tensors themselves (in the old dtype; copied only where they
    share memory with `model`), so the old ones are not copied first. Tensors may change
    shape (a pruned layer): tied names stay tied, ``requires_grad`` and dtype are kept, and
    every module whose tensors, or whose submodules' tensors, changed shape is handed to the
    plugins' ``cipm_resized`` hook, innermost first, to update attributes such as
    ``in_features`` or a head count (`blocked_plugins` left out). `model` itself is not
    changed.

    Raises:
        ResizeError: a plugin says a module cannot take its new sizes (names the module).
    """
    named: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    aliases: dict[int, list[str]] = {}
    for key, t in named.items():
        aliases.setdefault(id(t), []).append(key)
    storage = {t.untyped_storage().data_ptr() for t in named.values()}
    # the copy takes the new tensors as they are (deepcopy's memo), not copies of the old ones
    memo: dict[int, object] = {}
    changed: set[str] = set()
    for key, value in tensors.items():
        if key not in named:
            raise CipmError(f"{type(model).__name__} has no parameter or buffer '{key}'")
        old = named[key]
        if id(old) in memo:  # a tied name given twice: the first wins
            continue
        memo[id(old)] = _fresh(value, old, storage)
        if value.shape != old.shape:
            for alias in aliases[id(old)]:
                parts = alias.split(".")[:-1]
                changed.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    with warnings.catch_warnings():  # copying a loaded .pt2 archive: torch's notes on itself
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec")
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        new = copy.deepcopy(model, memo)
    for path in sorted(changed, key=lambda p: p.count(".") + bool(p), reverse=True):
        try:
            resized(new.get_submodule(path), blocked_plugins)
        except ResizeError:
            raise
        except CipmError as e:
            raise ResizeError(path, str(e)) from e
    return new


def _fresh(value: torch.Tensor, old: torch.Tensor, storage: set[int]) -> torch.Tensor:
    """`value` in `old`'s dtype and kind (a Parameter with its ``requires_grad``, or a
    buffer), in memory of its own (not in `storage`, the caller's model's tensors), so the
    caller's model is never written through the copy."""
    with torch.no_grad():
        value = value.detach().to(old.dtype).contiguous()
        if value.untyped_storage().data_ptr() in storage:
            value = value.clone()
    if isinstance(old, torch.nn.Parameter):
        return torch.nn.Parameter(value, requires_grad=old.requires_grad)
    return value
