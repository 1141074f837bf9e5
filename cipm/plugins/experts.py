"""Mixtures of experts: the experts themselves are a permutation group.

A sparse block routes each token to the experts its router's top-k picks. Renumbering the
experts (expert e's weights together with the router's row e) changes which index each
token is sent to, not what it meets, so the block computes the same function. The symmetry
lives in the *values* of the top-k indices, which no per-op rule can follow; this plugin
declares it for any block made the way Hugging Face's are (Mixtral, Qwen2-MoE, OLMoE,
DeepSeek, ...): a router child whose 2-D ``weight`` has one row per expert, and an experts
child whose tensors all have one leading slice per expert. cipm checks the declaration
before it admits it (`cipm.discovery.declared`).

Pruning experts (``kinds=("experts",)``) leaves fewer rows and slices; `cipm_resized` then
sets the ``num_experts`` the modules' forwards read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cipm import CipmError, GroupKind
from cipm.plugin import ModuleGroup, hookimpl


@hookimpl
def cipm_module_groups(module: torch.nn.Module) -> Sequence[ModuleGroup] | None:
    experts = getattr(module, "experts", None)
    if not isinstance(experts, torch.nn.Module):
        return None
    slices = _leading(experts, "experts.", ndim=3)
    if slices is None:
        return None
    n, members = slices
    routers = [
        found
        for name, child in module.named_children()
        if child is not experts and (found := _leading(child, f"{name}.", ndim=2, rows=n))
    ]
    if n < 2 or len(routers) != 1:  # no router, or two candidates: not a block we know
        return None
    return [ModuleGroup((*routers[0][1], *members), GroupKind.EXPERTS)]


def _leading(
    module: torch.nn.Module, prefix: str, *, ndim: int, rows: int | None = None
) -> tuple[int, list[tuple[str, int]]] | None:
    """(n, dim 0 of every tensor) if all of the module's own tensors lead with n slices and
    its ``weight`` (or first tensor) has `ndim` dims; routers may hold (n,) biases."""
    tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    if not tensors:
        return None
    main = dict(tensors).get("weight", tensors[0][1])
    n = rows if rows is not None else int(main.shape[0]) if main.ndim else 0
    if main.ndim != ndim or main.shape[0] != n:
        return None
    if any(t.ndim == 0 or t.shape[0] != n for _, t in tensors):
        return None
    return n, [(prefix + name, 0) for name, _ in tensors]


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    """A router or experts module keeps its expert count in ``num_experts``."""
    count = getattr(module, "num_experts", None)
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    if not isinstance(count, int) or not tensors or tensors[0].ndim < 2:
        return
    n = int(tensors[0].shape[0])
    if n == count or any(t.ndim == 0 or t.shape[0] != n for t in tensors):
        return
    top_k = getattr(module, "top_k", None)
    if isinstance(top_k, int) and top_k > n:
        raise CipmError(f"{type(module).__name__} routes each token to {top_k} experts; {n} left")
    setattr(module, "num_experts", n)  # noqa: B010 (a plain attribute the forward reads)
