"""Bad input gets a clear CipmError, and the caller's model is never changed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import snapshot, traced
from torch import nn

import cipm
from cipm.examples import catalog


class ChannelShuffleNet(nn.Module):
    """A conv, channel_shuffle (an op with no rule), a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.channel_shuffle(self.conv(x), 2))


def test_unknown_op_names_op_module_and_line() -> None:
    model = ChannelShuffleNet().eval()
    before = snapshot(model)
    with pytest.raises(cipm.UnsupportedOpError) as info:
        cipm.trace(model, torch.randn(1, 3, 4, 4))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    err = info.value
    assert err.op == "aten.channel_shuffle.default"
    assert "test_errors.py" in err.source and "channel_shuffle" in err.source
    assert "unknown='freeze'" in str(err)


def test_unknown_freeze_fixes_what_the_op_touches_and_stays_exact() -> None:
    model = ChannelShuffleNet().eval().double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    graph = cipm.trace(model, x, unknown="freeze")
    assert len(graph) == 0  # conv's channels feed channel_shuffle, head's feed the output
    mlp_like = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4)).double()

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp_like
            self.shuffle = ChannelShuffleNet().double()

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.mlp(a), self.shuffle(b)

    mixed = Mixed().eval()
    a = torch.randn(2, 4, dtype=torch.float64)
    graph = cipm.trace(mixed, (a, x), unknown="freeze")
    assert [g.size for g in graph] == [6]  # the MLP keeps its symmetry
    permuted = cipm.permute(mixed, graph.random_permutation(seed=0))
    for ya, yb in zip(mixed(a, x), permuted(a, x), strict=True):
        torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-10)


def test_bad_unknown_argument() -> None:
    model, x = catalog.build("mlp")
    with pytest.raises(cipm.CipmError, match="unknown must be"):
        cipm.trace(model, x, unknown="ignore")  # type: ignore[arg-type]


def test_not_a_module() -> None:
    with pytest.raises(cipm.CipmError, match=r"torch.nn.Module"):
        cipm.trace(lambda x: x, torch.randn(2))  # type: ignore[arg-type]


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on data: torch.export cannot trace this
            return self.fc(x)
        return x


def test_export_failure_is_trace_error_with_cause() -> None:
    model = DataDependent().eval()
    before = snapshot(model)
    with pytest.raises(cipm.TraceError) as info:
        cipm.trace(model, torch.randn(2, 4))
    assert info.value.__cause__ is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_permutation_for_another_model_names_the_group() -> None:
    graph = traced("mlp")  # width 32
    other, _ = catalog.mlp(width=16)
    before = snapshot(other)
    with pytest.raises(cipm.PermutationError, match="0:hidden") as info:
        cipm.permute(other, graph.random_permutation(seed=0))
    assert isinstance(info.value, ValueError)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())


def test_permutation_of_wrong_size_names_the_group() -> None:
    graph = traced("mlp")
    indices = {g.name: torch.arange(g.size) for g in graph}
    indices["2:hidden"] = torch.arange(5)
    with pytest.raises(cipm.PermutationError, match=r"'2:hidden'.*32 units"):
        cipm.Permutation(graph, indices)


def test_not_a_permutation_names_the_group() -> None:
    graph = traced("mlp")
    indices = {g.name: torch.arange(g.size) for g in graph}
    indices["0:hidden"] = torch.zeros(32, dtype=torch.long)
    with pytest.raises(ValueError, match="'0:hidden' are not a permutation"):
        cipm.Permutation(graph, indices)


def test_missing_and_foreign_groups() -> None:
    graph = traced("mlp")
    indices = {g.name: torch.arange(g.size) for g in graph}
    del indices["4:hidden"]
    with pytest.raises(cipm.PermutationError, match="missing group '4:hidden'"):
        cipm.Permutation(graph, indices)
    indices = {g.name: torch.arange(g.size) for g in traced("resnet20")}
    with pytest.raises(cipm.PermutationError, match="another model"):
        cipm.Permutation(graph, indices)


def test_permute_missing_tensor_names_the_group() -> None:
    graph = traced("mlp")
    model = nn.Sequential(nn.Linear(8, 32))
    with pytest.raises(cipm.PermutationError, match="no tensor of that name"):
        cipm.permute(model, graph.identity())
