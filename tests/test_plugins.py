"""Plugins: built-ins load through entry points, can be listed and blocked, and extended."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cipm
from cipm.discovery.rules import OpCall
from cipm.hooks.manager import get_plugin_manager, op_rules

BUILT_INS = {
    "torch_attention",
    "torch_elementwise",
    "torch_layers",
    "torch_reductions",
    "torch_shapes",
}


def test_built_ins_are_entry_point_plugins() -> None:
    assert set(cipm.list_plugins()) >= BUILT_INS
    pm = get_plugin_manager()
    dists = {name for name, _ in pm.list_plugin_distinfo()}
    assert all(pm.get_plugin(n) is not None for n in BUILT_INS) and dists


def test_blocking_a_plugin_removes_its_rules() -> None:
    assert "torch_layers" not in cipm.list_plugins(blocked=["torch_layers"])
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.raises(cipm.UnsupportedOpError, match=r"aten.linear"):
        cipm.trace(model, torch.randn(2, 3), blocked_plugins=("torch_layers",))


class ShuffleRules:
    """A third-party plugin: pixel_shuffle moves (C*r*r, H, W) -> (C, H*r, W*r)."""

    @cipm.hookimpl
    def cipm_rules(self):  # type: ignore[no-untyped-def]
        def pixel_shuffle(call: OpCall) -> None:
            x = call.tensor(0)
            r = call.value("upscale_factor")
            channels, subpixel = call.split(x.axes[1], "product", [x.shape[1] // (r * r), r * r])
            call.fix(subpixel, *x.axes[2:])  # sub-pixel offsets become spatial positions
            spatial = [call.new(n) for n in call.out_shape[2:]]
            call.fix(*spatial)
            call.set_output([x.axes[0], channels, *spatial])

        return {"aten.pixel_shuffle": pixel_shuffle}


def test_third_party_rule_plugin_extends_the_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = get_plugin_manager()
    pm.register(ShuffleRules(), name="shuffle")
    monkeypatch.setattr("cipm.discovery.tracer.op_rules", lambda *a: op_rules(pm))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Conv2d(2, 4, 1)
            self.out = nn.Conv2d(4, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.head(F.pixel_shuffle(self.conv(x), 2))))

    model = Net().eval().double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    graph = cipm.trace(model, x)
    assert sorted(g.size for g in graph) == [2, 4]  # conv's channel groups, head's channels
    permuted = cipm.permute(model, graph.random_permutation(seed=3))
    torch.testing.assert_close(model(x), permuted(x), rtol=1e-9, atol=1e-10)


def test_malformed_plugin_is_a_plugin_error() -> None:
    class Bad:
        @cipm.hookimpl
        def cipm_rules(self):  # type: ignore[no-untyped-def]
            return ["aten.relu"]

    pm = get_plugin_manager()
    pm.register(Bad(), name="bad")
    with pytest.raises(cipm.PluginError, match="mapping"):
        op_rules(pm)
