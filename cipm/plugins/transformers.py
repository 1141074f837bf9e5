"""Hugging Face transformers' own layers: their size attributes, for pruned models, and the
weight and bias REPAIR folds a rescaling into.

GPT-2 and its relatives use `Conv1D` (a linear layer with a transposed weight that records
its output width as ``nf``) and a fused q|k|v projection ``c_attn`` cut by ``split_size``.
Matched by their attributes, so this plugin doesn't import transformers. Its custom op
``transformers::grouped_mm_fallback`` (mixture-of-experts layers) is ``aten._grouped_mm``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.plugin import Rule, hookimpl
from cipm.plugins.layers import grouped_mm


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    return {"transformers.grouped_mm_fallback": grouped_mm}


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    weight = getattr(module, "weight", None)
    if _is_conv1d(module) and isinstance(weight, torch.Tensor):
        nx, nf = (int(n) for n in weight.shape)  # Conv1D: weight [in, out]
        setattr(module, "nx", nx)  # noqa: B010 (plain attributes, unknown to the type checker)
        setattr(module, "nf", nf)  # noqa: B010
        return
    fused = getattr(module, "c_attn", None)
    head_dim = getattr(module, "head_dim", None)
    if hasattr(fused, "nf") and isinstance(head_dim, int) and hasattr(module, "split_size"):
        parts = 2 if getattr(module, "is_cross_attention", False) else 3
        heads = fused.nf // parts // head_dim  # type: ignore[union-attr]
        setattr(module, "num_heads", heads)  # noqa: B010
        setattr(module, "split_size", heads * head_dim)  # noqa: B010


@hookimpl
def cipm_affine_parameters(module: torch.nn.Module) -> tuple[str, str] | None:
    """Conv1D: ``x @ weight[in, out] + bias[out]`` (its output units along the weight's dim 1,
    which the symmetry graph says)."""
    if _is_conv1d(module) and isinstance(getattr(module, "bias", None), torch.Tensor):
        return ("weight", "bias")
    return None


def _is_conv1d(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return hasattr(module, "nf") and hasattr(module, "nx") and isinstance(weight, torch.Tensor)
