"""Rebuilding a model with resized tensors: same class, new shapes, attributes updated."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch

from cipm.errors import CipmError
from cipm.hooks.manager import resized

__all__ = ["with_tensors"]


def with_tensors(
    model: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    blocked_plugins: Iterable[str] = (),
) -> torch.nn.Module:
    """A copy of `model` whose parameters and buffers named in `tensors` hold those values.

    Tensors may change shape (a pruned layer): the copy gets new parameters of the new shape
    (tied names stay tied, ``requires_grad`` and dtype are kept), and every module whose
    tensors, or whose submodules' tensors, changed shape is handed to the plugins'
    ``cipm_resized`` hook, innermost first, to update attributes such as ``in_features`` or a
    head count (`blocked_plugins` left out). `model` itself is not changed.
    """
    new = copy.deepcopy(model)
    named: dict[str, torch.Tensor] = dict(new.named_parameters(remove_duplicate=False))
    named.update(new.named_buffers(remove_duplicate=False))
    aliases: dict[int, list[str]] = {}
    for key, t in named.items():
        aliases.setdefault(id(t), []).append(key)
    changed: set[str] = set()
    with torch.no_grad():
        for key, value in tensors.items():
            if key not in named:
                raise CipmError(f"{type(model).__name__} has no parameter or buffer '{key}'")
            old = named[key]
            value = value.to(old.dtype).contiguous()
            if value.shape == old.shape:
                old.copy_(value)
                continue
            replacement: torch.Tensor = (
                torch.nn.Parameter(value.clone(), requires_grad=old.requires_grad)
                if isinstance(old, torch.nn.Parameter)
                else value.clone()
            )
            for alias in aliases[id(old)]:
                path, _, name = alias.rpartition(".")
                module = new.get_submodule(path)
                if name in module._parameters:
                    module._parameters[name] = replacement  # type: ignore[assignment]
                else:
                    module._buffers[name] = replacement
                parts = path.split(".") if path else []
                changed.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    for path in sorted(changed, key=lambda p: p.count(".") + bool(p), reverse=True):
        resized(new.get_submodule(path), blocked_plugins)
    return new
