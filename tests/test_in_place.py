"""In-place ops take their functional op's rule (one mechanism, no rule per op): permuting
every group keeps the output exactly (float64), and the in-place ops do not lose groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_function
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import cipm


class InPlace(nn.Module):
    """Residual MLP written the way torchvision and timm write theirs: in-place activations,
    ``out += identity``, an in-place clamp and zeroing a slice of a stream."""

    def __init__(self, zero_slice: bool) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.SiLU(inplace=True)
        self.zero_slice = zero_slice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.a(x))
        y = self.b(h)
        y += h
        y = F.hardswish(y, inplace=True)
        y.clamp_(-3.0, 3.0)
        y.mul_(2.0)
        if self.zero_slice:
            y[:, :2].zero_()  # a write through a view: those two units must stay apart
        return self.c(F.relu_(y))


@given(zero_slice=st.booleans(), seed=st.integers(0, 2**16))
def test_in_place_ops_keep_their_symmetries_exactly(zero_slice: bool, seed: int) -> None:
    model = InPlace(zero_slice).eval().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    graph = cipm.trace(model, x)
    sizes = sorted(g.size for g in graph)
    assert sizes == ([2, 6] if zero_slice else [8])  # the stream, cut where a slice is zeroed
    assert_same_function(model, cipm.permute(model, graph.random_permutation(seed=seed)), x)


def test_an_in_place_op_without_a_functional_rule_is_still_unsupported() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, torch.ones(3, 4)).cauchy_()

    with pytest.raises(cipm.UnsupportedOpError, match="cauchy_"):
        cipm.trace(Odd().eval(), torch.randn(2, 4))
