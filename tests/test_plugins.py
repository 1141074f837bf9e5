"""Plugins: built-ins are registered by the manager, can be listed and blocked, and extended."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cipm
from cipm.discovery.rules import OpCall
from cipm.exporting.sources import model_sources
from cipm.hooks import manager
from cipm.hooks.manager import get_plugin_manager, new_plugin_manager, op_roles, op_rules
from cipm.plugin import ModelSource

BUILT_INS = {
    "torch_attention",
    "torch_elementwise",
    "torch_layers",
    "torch_reductions",
    "torch_shapes",
}


def test_built_ins_need_no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout that is only on sys.path has no entry points: the built-ins are there."""
    assert set(cipm.list_plugins()) >= BUILT_INS
    monkeypatch.setattr(pluggy.PluginManager, "load_setuptools_entrypoints", lambda *a: 0)
    pm = new_plugin_manager()
    assert set(manager.BUILT_INS) == {n for n, p in pm.list_name_plugin() if p is not None}
    assert "aten.linear" in op_rules(pm)


def test_blocking_a_plugin_removes_its_rules() -> None:
    assert "torch_layers" not in cipm.list_plugins(blocked_plugins=["torch_layers"])
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


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """`plugin` registered in-process on the manager every cipm call uses, for the block."""
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(plugin)


def test_third_party_rule_plugin_extends_the_tracer() -> None:
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
    builtin = ("torch_resampling",)  # its rule is built in now: left out, this one is tried
    with pytest.raises(cipm.UnsupportedOpError, match="pixel_shuffle"):
        cipm.trace(model, x, blocked_plugins=builtin)
    with registered(ShuffleRules(), "shuffle"):
        graph = cipm.trace(model, x, blocked_plugins=builtin)
    assert sorted(g.size for g in graph) == [2, 4]  # conv's channel groups, head's channels
    permuted = cipm.permute(model, graph.random_permutation(seed=3))
    torch.testing.assert_close(model(x), permuted(x), rtol=1e-9, atol=1e-10)


def test_malformed_plugin_is_a_plugin_error() -> None:
    class Bad:
        @cipm.hookimpl
        def cipm_rules(self):  # type: ignore[no-untyped-def]
            return ["aten.relu"]

    pm = new_plugin_manager()
    pm.register(Bad(), name="bad")
    with pytest.raises(cipm.PluginError, match="mapping"):
        op_rules(pm)


def test_built_in_plugins_give_no_two_rules_for_one_op() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", cipm.CipmWarning)
        rules, roles = op_rules(), op_roles()
    assert "aten.linear" in rules and roles["aten.linear"] == "affine"
    assert roles["aten.transpose"] == roles["aten.detach"] == "view"


class Relu:
    """Two plugins with a rule for aten.relu: the second registered is called first."""

    def __init__(self, *, tryfirst: bool = False) -> None:
        @cipm.hookimpl(tryfirst=tryfirst)
        def cipm_rules():  # type: ignore[no-untyped-def]
            return {"aten.relu": self.rule}

        self.cipm_rules = cipm_rules

    def rule(self, call: OpCall) -> None:
        call.set_output(call.tensor(0).axes)


def test_two_rules_for_one_op_say_which_won() -> None:
    pm = new_plugin_manager()
    pm.register(Relu(), name="first")
    second = Relu()
    pm.register(second, name="second")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", cipm.CipmWarning)
        assert op_rules(pm)["aten.relu"] == second.rule
    assert sorted(str(w.message).split("'")[3] for w in said) == ["first", "torch_elementwise"]
    assert all("'second' wins" in str(w.message) for w in said)
    deliberate = Relu(tryfirst=True)
    pm.register(deliberate, name="deliberate")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cipm.CipmWarning)
        assert op_rules(pm)["aten.relu"] == deliberate.rule


def test_blocking_an_unknown_plugin_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.raises(cipm.PluginError, match=r"no plugin named \['torch_layer'\]"):
        cipm.trace(model, torch.randn(2, 3), blocked_plugins=("torch_layer",))


class Width(nn.Module):
    """A layer that records its width, which only a plugin of its own can update."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.width = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x)).reshape(-1, self.width)


class WidthRules:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @cipm.hookimpl
    def cipm_resized(self, module: nn.Module) -> None:
        if isinstance(module, Width):
            self.seen.append("width")
            module.width = module.proj.weight.shape[0]


def test_blocked_plugins_apply_to_every_hook_called_for_the_graph() -> None:
    model = nn.Sequential(Width(), nn.Linear(8, 2)).eval().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    spy = WidthRules()
    with registered(spy, "width_rules"):
        free = cipm.trace(model, x)
        blocked = cipm.trace(model, x, blocked_plugins=("width_rules",))
        assert blocked.blocked_plugins == ("width_rules",)
        again = cipm.SymmetryGraph.from_json(blocked.to_json())
        assert again.blocked_plugins == ("width_rules",)
        small = cipm.prune(
            model, free, ratio=0.5, method="magnitude", config=cipm.PruneConfig(example_inputs=x)
        ).model
        assert spy.seen == ["width"] and small[0].width == 4
        with pytest.warns(cipm.CipmWarning, match="kept 1 group"):  # not a broken model
            whole_result = cipm.prune(
                model,
                again,
                ratio=0.5,
                method="magnitude",
                config=cipm.PruneConfig(example_inputs=x),
            )
            whole = whole_result.model
        (kept,) = whole_result.report.kept_whole
        assert kept.module == "1" and whole[0].width == 8  # the Linear that got 8 inputs
    assert spy.seen == ["width"]  # the blocked graph's prune never called the plugin


class Counting(nn.Module):
    """A module with a running statistic (the mean of its inputs) that no built-in knows."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += len(x)
            self.mean += (x.sum(0) - len(x) * self.mean) / self.seen
        return self.lin(x - self.mean)


class CountingStats:
    @cipm.hookimpl
    def cipm_reset_running_stats(self, module: nn.Module):  # type: ignore[no-untyped-def]
        if not isinstance(module, Counting):
            return None
        module.mean.zero_()
        module.seen.zero_()
        module.train()
        return lambda: None


def test_a_plugin_resets_running_statistics_of_its_own_modules() -> None:
    model = Counting().double().eval()
    data = [torch.randn(5, 3, dtype=torch.float64) + 2.0 for _ in range(3)]
    untouched = cipm.merge([model, model], data=data)
    assert torch.equal(untouched.mean, torch.zeros(3))  # no plugin knows it: left as it was
    with registered(CountingStats(), "counting_stats"):
        merged = cipm.merge([model, model], data=data)
    torch.testing.assert_close(merged.mean, torch.cat(data).mean(0), rtol=1e-12, atol=1e-12)
    assert not merged.training and not model.training


class Reverse:
    """A third-party alignment method: B's units in reverse order."""

    @cipm.hookimpl
    def cipm_align_methods(self):  # type: ignore[no-untyped-def]
        def reverse(problem: cipm.AlignProblem) -> cipm.Permutation:
            graph = problem.graph
            return cipm.Permutation(graph, {g.name: torch.arange(g.size).flip(0) for g in graph})

        return {"reverse": reverse}


def test_a_plugin_adds_an_alignment_method() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    graph = cipm.trace(model, torch.randn(2, 3))
    with pytest.raises(cipm.CipmError, match="unknown alignment method 'reverse'"):
        cipm.align(model, model, graph, method="reverse")
    with registered(Reverse(), "reverse"):
        assert "reverse" in cipm.align_methods()
        perm = cipm.align(model, model, graph, method="reverse")
    assert torch.equal(perm[graph.groups[0].name], torch.tensor([3, 2, 1, 0]))


class Shifted(nn.Module):
    """A layer no built-in plugin knows: ``x @ kernel[in, out] + shift`` (units along dim 1)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(n_in, n_out))
        self.shift = nn.Parameter(torch.randn(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.shift, x, self.kernel)


class ShiftedParameters:
    @cipm.hookimpl
    def cipm_affine_parameters(self, module: nn.Module):  # type: ignore[no-untyped-def]
        return ("kernel", "shift") if isinstance(module, Shifted) else None


def test_a_plugin_names_the_weight_and_bias_repair_folds_into() -> None:
    from cipm.merging.renormalize import _moments, producer_sites

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(Shifted(3, 6), nn.ReLU(), nn.Linear(6, 2)).double().eval()

    a, b = net(1), net(2)
    data = [torch.randn(16, 3, dtype=torch.float64) for _ in range(3)]
    graph = cipm.trace(a, data[0])
    merged = cipm.merge([a, b])
    assert producer_sites(graph, merged) == {}  # nobody says which tensor is the shift
    untouched = cipm.repair(merged, [a, b], graph, data)
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in untouched.state_dict().items())
    with registered(ShiftedParameters(), "shifted_parameters"):
        sites = producer_sites(graph, merged)
        assert [s.module for s in sites.values()] == ["0"]
        repaired = cipm.repair(merged, [a, b], graph, data)
    got, ends = (
        _moments(repaired, graph, sites, data),
        [_moments(m, graph, sites, data) for m in (a, b)],
    )
    for group in sites:
        target_std = (ends[0][group].std + ends[1][group].std) / 2
        target_mean = (ends[0][group].mean + ends[1][group].mean) / 2
        torch.testing.assert_close(got[group].std, target_std, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got[group].mean, target_mean, rtol=1e-9, atol=1e-12)
    ratio = repaired[0].kernel / merged[0].kernel  # one scale per unit: per column of dim 1
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))


class ToySource:
    """A third-party model source: a ``.toy`` file holding a Linear layer's sizes."""

    @cipm.hookimpl
    def cipm_model_sources(self):  # type: ignore[no-untyped-def]
        def load(path: Path) -> nn.Module:
            n_in, hidden, n_out = (int(n) for n in path.read_text().split())
            return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

        source = ModelSource(
            accepts=lambda path: path.suffix == ".toy", load=load, description="a .toy file"
        )
        return {"toy": source}


def test_a_plugin_adds_a_model_source_to_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cipm.cli import main

    path = tmp_path / "model.toy"
    path.write_text("3 5 2")
    argv = ["inspect", str(path), "--input", "2,3"]
    assert main(argv) == 2  # a file nobody reads: cipm would have to unpickle it
    assert "--unsafe-pickle" in capsys.readouterr().err
    with registered(ToySource(), "toy_source"):
        assert "toy" in model_sources()
        assert main(argv) == 0
        assert "SymmetryGraph of Sequential" in capsys.readouterr().out
        assert main(["inspect", str(tmp_path / "nothing.toy"), "--input", "2,3"]) == 2
        assert "a .toy file" in capsys.readouterr().err  # listed among what a model can be
    assert main(["inspect", str(tmp_path), "--input", "2,3"]) == 2
    assert "is a folder but not a Hugging Face model folder" in capsys.readouterr().err
