"""Rules for attention: scaled_dot_product_attention, the op nn.MultiheadAttention and most
transformer implementations lower to.

q[..., L, E] @ k[..., S, E] contracts E, so q and k share their within-head axis; the weights
@ v[..., S, Ev] give out[..., L, Ev], so v and the output share theirs. The leading dims
(batch, heads) are the same axis across q, k, v and the output: heads move as whole units.
Query/key positions stay with their tokens; with a causal mask their order matters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from cipm import CipmError
from cipm.plugin import OpCall, Rule, TensorRef, broadcast_axes, hookimpl


def sdpa(call: OpCall) -> None:
    q, k, v = call.tensor("query"), call.tensor("key"), call.tensor("value")
    mask = call.maybe_tensor("attn_mask")
    out = call.out_shape
    if call.value("enable_gqa", False) and q.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        kv_heads = k.shape[-3]
        q_heads = call.split(q.axes[-3], "product", [kv_heads, q.shape[-3] // kv_heads])
        call.unify(q_heads[0], k.axes[-3])
        k = TensorRef(
            (*k.shape[:-3], q.shape[-3], *k.shape[-2:]), (*k.axes[:-3], q.axes[-3], *k.axes[-2:])
        )
    lead = broadcast_axes(call, [_lead(q), _lead(k), _lead(v)], out[:-2])
    call.unify(q.axes[-1], k.axes[-1])
    call.unify(k.axes[-2], v.axes[-2])
    length, source = q.axes[-2], k.axes[-2]
    if mask is not None:  # broadcast against the attention weights [..., L, S]
        weights = (*out[:-2], q.shape[-2], k.shape[-2])
        broadcast_axes(call, [mask, TensorRef(weights, (*lead, length, source))], weights)
    if call.value("is_causal", False):
        call.fix(length, source)
    if len(lead) >= 1:
        call.tag(lead[-1], "heads")
    call.tag(q.axes[-1], "within_head")
    call.tag(v.axes[-1], "within_head")
    call.set_output([*lead, length, v.axes[-1]], 0)
    for i in range(1, len(call.output_shapes)):  # logsumexp etc. of the fused variants
        shape = call.output_shapes[i]
        if shape is not None and shape[: len(lead)] == tuple(out[: len(lead)]):
            rest = [call.new(n) for n in shape[len(lead) :]]
            call.fix(*rest)
            call.set_output([*lead, *rest], i)


def _lead(ref: TensorRef) -> TensorRef:
    return TensorRef(ref.shape[:-2], ref.axes[:-2])


# Attribute names attention modules use for their head count and head size, and for the
# query projection whose output is heads x head size (Hugging Face, fairseq, cipm's zoo, ...).
HEAD_COUNTS = ("num_attention_heads", "num_heads", "n_heads", "heads")
HEAD_SIZES = ("attention_head_size", "head_dim", "head_size")
QUERIES = ("query", "q_proj", "q", "to_q", "q_lin", "wq")
KEYS = ("key", "k_proj", "k", "to_k", "k_lin", "wk")
FUSED = ("to_qkv", "qkv", "query_key_value", "qkv_proj", "Wqkv")  # q | k | v in one linear


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    """An attention module whose heads were pruned: its head count (and all-heads width)
    follow its query projection's (or fused q|k|v projection's) new output size."""
    size, count = _int_attr(module, HEAD_SIZES), _int_attr(module, HEAD_COUNTS)
    query, key = _linear(module, QUERIES), _linear(module, KEYS)
    fused = _linear(module, FUSED) if query is None else None
    if size is None or (query or fused) is None:
        return
    head_size = getattr(module, size)
    projection = fused if fused is not None else query
    assert projection is not None
    width = projection.out_features // (3 if fused is not None else 1)
    if width % head_size or width < head_size:  # units within a head went: not whole heads
        raise CipmError(
            f"{type(module).__name__} keeps {width} query units, not a whole number of heads "
            f"of {head_size}: prune its heads, not the units within them"
        )
    if fused is not None:  # q | k | v of equal widths, heads x head size each
        table = getattr(module, "relative_position_bias_table", None)  # a column per head
        heads = table.shape[-1] if isinstance(table, torch.Tensor) else width // head_size
        if count is not None:
            setattr(module, count, heads)
        setattr(module, size, width // heads)
        return
    assert query is not None
    heads = query.out_features // head_size
    if count is not None:
        setattr(module, count, heads)
    if isinstance(getattr(module, "all_head_size", None), int):
        module.all_head_size = heads * head_size
    if key is not None and _int_attr(module, ("num_key_value_groups",)):  # grouped-query
        kv_heads = key.out_features // head_size
        module.num_key_value_groups = heads // kv_heads
        if _int_attr(module, ("num_key_value_heads",)):
            module.num_key_value_heads = kv_heads


def _linear(module: torch.nn.Module, names: tuple[str, ...]) -> nn.Linear | None:
    return next(
        (getattr(module, n) for n in names if isinstance(getattr(module, n, None), nn.Linear)),
        None,
    )


def _int_attr(module: torch.nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if type(getattr(module, n, None)) is int), None)


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    return {
        "aten.scaled_dot_product_attention": sdpa,
        "aten._scaled_dot_product_flash_attention_for_cpu": sdpa,
    }
