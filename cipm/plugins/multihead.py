"""torch.nn.MultiheadAttention with pruned heads.

``nn.MultiheadAttention`` derives its head size from ``embed_dim // num_heads`` and checks
that the projections are ``embed_dim`` wide, so after pruning heads (the q/k/v projections
are ``kept heads x head_dim`` wide, the input and output still ``embed_dim``) its own forward
fails. The resizer turns such a module into a `HeadPrunedMultiheadAttention`: the same module
(same parameters and names, still an ``nn.MultiheadAttention``) whose forward computes the
attention of the heads it has. It reports itself as not packed in the layout torch's fused
encoder kernel expects, so ``nn.TransformerEncoderLayer`` takes its general path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cipm.plugin import hookimpl


class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """Multi-head attention whose heads x head_dim may be less than embed_dim.

    Same arguments and results as ``nn.MultiheadAttention.forward``; a 3-D ``attn_mask``
    (one mask per head) must have this module's head count.
    """

    @property
    def _qkv_same_embed_dim(self) -> bool:
        return False  # not the fused kernels' layout (their head size is embed_dim / heads)

    @_qkv_same_embed_dim.setter
    def _qkv_same_embed_dim(self, value: bool) -> None:
        pass

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # as torch does: the hint stands for the mask (SDPA's causal one)
        else:
            is_causal = False  # the mask given is the mask
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._project(query, key, value)
        length, batch = query.shape[:2]
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(1, batch, -1)])
            v = torch.cat([v, self.bias_v.expand(1, batch, -1)])
            attn_mask, key_padding_mask = _pad(attn_mask), _pad(key_padding_mask)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(1, *k.shape[1:])])
            v = torch.cat([v, v.new_zeros(1, *v.shape[1:])])
            attn_mask, key_padding_mask = _pad(attn_mask), _pad(key_padding_mask)
        q, k, v = (self._heads(t, batch) for t in (q, k, v))
        mask = self._mask(attn_mask, key_padding_mask, batch, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(-1)
            out = F.dropout(weights, dropout, self.training) @ v
            if average_attn_weights:
                weights = weights.mean(1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal=is_causal)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, -1)
        out = self.out_proj(out)
        if unbatched:
            return out.squeeze(1), None if weights is None else weights.squeeze(0)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
        if self.in_proj_weight is not None:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return tuple(
            F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True)
        )

    def _heads(self, x: Tensor, batch: int) -> Tensor:
        """(length, batch, heads * head_dim) -> (batch, heads, length, head_dim)."""
        return x.reshape(x.shape[0], batch, self.num_heads, -1).permute(1, 2, 0, 3)

    def _mask(
        self, attn_mask: Tensor | None, padding: Tensor | None, batch: int, q: Tensor
    ) -> Tensor | None:
        """One additive float mask (batch, heads, length, source), or None."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, q.dtype)
            if mask.dim() == 3:
                if mask.shape[0] != batch * self.num_heads:
                    raise RuntimeError(
                        f"a per-head attn_mask needs batch x {self.num_heads} masks (the heads "
                        f"this pruned attention has), got {mask.shape[0]}"
                    )
                mask = mask.reshape(batch, self.num_heads, *mask.shape[1:])
        if padding is not None:
            pad = _additive(padding, q.dtype)[:, None, None, :]
            mask = pad if mask is None else mask + pad
        return mask


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    return mask.to(dtype)


def _pad(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else F.pad(mask, (0, 1))


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    """A resized MultiheadAttention: its sizes follow its projections, and where its heads no
    longer fill embed_dim it becomes a `HeadPrunedMultiheadAttention` (whose forward allows
    that)."""
    if not isinstance(module, nn.MultiheadAttention):
        return
    if module.in_proj_weight is not None:
        inner = module.in_proj_weight.shape[0] // 3
        module.kdim = module.vdim = module.in_proj_weight.shape[1]
    else:
        inner = module.q_proj_weight.shape[0]
        module.kdim, module.vdim = module.k_proj_weight.shape[1], module.v_proj_weight.shape[1]
    module.embed_dim = module.out_proj.out_features
    module.num_heads = inner // module.head_dim
    if module.num_heads * module.head_dim != module.embed_dim:
        module.__class__ = HeadPrunedMultiheadAttention
