"""Each built-in rule, exercised inside a small model: permuting every group it finds keeps the
output exactly (float64), and the model does have groups for the permutation to move."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_function
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import cipm


class Wrap(nn.Module):
    """in Linear(6 -> 12) -> body(h) -> out Linear(body width -> 3)."""

    def __init__(
        self,
        body: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        width: int = 12,
        out_in: int = 12,
        **layers: nn.Module,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        self.layers = nn.ModuleDict(layers)
        self.out = nn.Linear(out_in, 3)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.layers, self.inp(x)))


def _seq(x: torch.Tensor) -> torch.Tensor:  # (B, 12) -> (B, T=4, 12) with distinct tokens
    return torch.stack([x, x.sin(), x.cos(), x * 0.5], dim=1)


def _no_grad_region(m: nn.ModuleDict, h: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # exported as a subgraph called by a higher-order op
        scale = torch.sigmoid(h) * 2
    return h * scale


def _index_put(m: nn.ModuleDict, h: torch.Tensor) -> torch.Tensor:
    s = _seq(h)
    z = torch.zeros_like(s)
    z[:, torch.tensor([0, 2])] = F.relu(s[:, torch.tensor([1, 3])])  # index_put_ on tokens
    return z.sum(1)


CASES: dict[str, Callable[[], nn.Module]] = {
    "split_cat": lambda: Wrap(lambda m, h: torch.cat([F.relu(p) for p in h.split([5, 7], -1)], -1)),
    "chunk_mul": lambda: Wrap(
        lambda m, h: (lambda a, b: a * torch.sigmoid(b))(*h.chunk(2, -1)), out_in=6
    ),
    "slice": lambda: Wrap(lambda m, h: F.gelu(h[:, 2:9]), out_in=7),
    "reshape_softmax": lambda: Wrap(lambda m, h: h.view(-1, 3, 4).softmax(-1).reshape(-1, 12)),
    "reduce_keepdim": lambda: Wrap(lambda m, h: h - h.mean(-1, keepdim=True) + h.amax(-1, True)),
    "rms_norm": lambda: Wrap(lambda m, h: m["n"](h), n=nn.RMSNorm(12)),
    "layer_norm_tanh": lambda: Wrap(lambda m, h: torch.tanh(m["n"](h)), n=nn.LayerNorm(12)),
    "where_masked": lambda: Wrap(
        lambda m, h: torch.where(h > 0, h, 0.1 * h).masked_fill(h.abs() < 0.05, 0.0)
    ),
    "matmul_bmm": lambda: Wrap(
        lambda m, h: torch.matmul(
            torch.bmm(_seq(m["a"](h)).transpose(1, 2), _seq(h)).sum(1), m["b"].weight.t()
        ),
        a=nn.Linear(12, 8),
        b=nn.Linear(12, 12),
    ),
    "einsum": lambda: Wrap(
        lambda m, h: torch.einsum("bi,bj->bij", m["a"](h), h).sum(1), a=nn.Linear(12, 5)
    ),
    "expand_repeat": lambda: Wrap(
        lambda m, h: (
            (h.unsqueeze(1).expand(-1, 3, -1) * torch.arange(3.0, dtype=h.dtype)[:, None])
            .sum(1)
            .repeat(1, 2)
        ),
        out_in=24,
    ),
    "pad_channels": lambda: Wrap(lambda m, h: F.pad(F.relu(h), (0, 4)), out_in=16),
    "conv1d_pool": lambda: Wrap(
        lambda m, h: F.max_pool1d(F.relu(m["c"](_seq(h).transpose(1, 2))), 2).mean(-1),
        out_in=10,
        c=nn.Conv1d(12, 10, 3, padding=1),
    ),
    "grouped_conv": lambda: Wrap(
        lambda m, h: m["c2"](F.relu(m["c"](_seq(h).transpose(1, 2)))).mean(-1),
        out_in=8,
        c=nn.Conv1d(12, 6, 1, groups=3),
        c2=nn.Conv1d(6, 8, 3, groups=2),
    ),
    "conv_transpose": lambda: Wrap(
        lambda m, h: F.avg_pool1d(m["t"](_seq(h).transpose(1, 2)), 2).amax(-1),
        out_in=5,
        t=nn.ConvTranspose1d(12, 5, 3),
    ),
    "attention_mask": lambda: Wrap(
        lambda m, h: (
            F.scaled_dot_product_attention(
                *(m[k](_seq(h)).view(-1, 4, 2, 6).transpose(1, 2) for k in "qkv"),
                attn_mask=torch.tril(torch.ones(4, 4, dtype=torch.bool)),
            )
            .transpose(1, 2)
            .flatten(2)
            .mean(1)
        ),
        q=nn.Linear(12, 12),
        k=nn.Linear(12, 12),
        v=nn.Linear(12, 12),
    ),
    "gather_index_diff": lambda: Wrap(
        lambda m, h: (
            h.gather(0, torch.arange(h.shape[0])[:, None].expand(-1, 12))
            + h[torch.arange(h.shape[0])]
            + torch.diff(h, dim=0, prepend=h[:1])
        )
    ),
    "grad_disabled_region": lambda: Wrap(_no_grad_region),
    "gqa_expand": lambda: Wrap(
        lambda m, h: (
            F.scaled_dot_product_attention(
                m["q"](_seq(h)).view(-1, 4, 4, 3).transpose(1, 2),
                *(
                    m[k](_seq(h))
                    .view(-1, 4, 2, 3)
                    .transpose(1, 2)[:, :, None]
                    .expand(-1, -1, 2, -1, -1)
                    .reshape(-1, 4, 4, 3)
                    for k in "kv"
                ),
            )
            .transpose(1, 2)
            .flatten(2)
            .mean(1)
        ),
        q=nn.Linear(12, 12),
        k=nn.Linear(12, 6),
        v=nn.Linear(12, 6),
    ),
    "swapaxes_movedim": lambda: Wrap(
        lambda m, h: torch.movedim(F.relu(torch.swapaxes(_seq(h), 1, 2)), 1, 2).mean(1)
    ),
    "numpy_T": lambda: Wrap(lambda m, h: F.relu(h.T).T),
    "repeat_interleave": lambda: Wrap(lambda m, h: F.relu(h.repeat_interleave(2, -1)), out_in=24),
    "index_put": lambda: Wrap(_index_put),
    "histc": lambda: Wrap(lambda m, h: h * torch.histc(h, bins=5).amax() / h.numel()),
}


@functools.cache
def traced_case(case: str) -> tuple[nn.Module, torch.Tensor, cipm.SymmetryGraph]:
    torch.manual_seed(0)
    model = CASES[case]().eval().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    return model, x, cipm.trace(model, x)


@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1))
def test_rule_keeps_function(case: str, seed: int) -> None:
    model, x, graph = traced_case(case)
    assert len(graph) >= 1, "no group found: the test would prove nothing"
    assert_same_function(model, cipm.permute(model, graph.random_permutation(seed=seed)), x)


def test_gqa_key_value_heads_carry_their_query_heads() -> None:
    torch.manual_seed(0)
    model = CASES["gqa_expand"]().eval()
    graph = cipm.trace(model, torch.randn(5, 6))
    heads = sorted(g.size for g in graph.by_kind("heads"))
    assert heads == [2, 2]  # 2 key/value heads, and 2 query heads within each group
