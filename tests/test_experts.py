"""The experts of a mixture of experts as a permutation group (plugins/experts.py), and the
mechanism behind it: symmetries a module declares (`cipm_module_groups`), admitted only
when the trace's axes and the module's own outputs agree."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import hf_families
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.discovery.rules import ModuleGroup


def logits(model: nn.Module, x: tuple[Any, ...]) -> torch.Tensor:
    with torch.no_grad():
        out = model(*x)
    return out.logits if hasattr(out, "logits") else out


def only(graph: cipm.SymmetryGraph, kind: str, seed: int) -> cipm.Permutation:
    """A random permutation of the groups of one kind, every other group left as it is."""
    rand = cipm.Permutation.random(graph, seed=seed)
    ident = cipm.Permutation.identity(graph)
    return cipm.Permutation(
        graph, {g.name: (rand if g.kind.value == kind else ident)[g.name] for g in graph}
    )


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe"])
def moe(request: pytest.FixtureRequest) -> tuple[str, nn.Module, tuple[Any, ...], Any]:
    model, x, _ = hf_families.build(request.param)
    return request.param, model, x, cipm.trace(model, x)


def test_each_layer_has_its_experts_as_a_group(moe: Any) -> None:
    """Router row e and expert e's slices of every experts tensor, in one group per block."""
    _, model, _, graph = moe
    experts = graph.by_kind("experts")
    assert [g.name for g in experts] == [f"model.layers.{i}.mlp:experts" for i in range(2)]
    for i, g in enumerate(experts):
        block = f"model.layers.{i}.mlp"
        config = model.config.to_dict()
        assert g.size == config.get("num_local_experts", config.get("num_experts"))
        assert {(m.key, m.dim) for m in g.members} == {
            (f"{block}.gate.weight", 0),
            (f"{block}.experts.gate_up_proj", 0),
            (f"{block}.experts.down_proj", 0),
        }
        assert all(s.module.startswith(block) for s in g.sites)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_permuting_experts_alone_keeps_the_function(moe: Any, seed: int) -> None:
    name, model, x, graph = moe
    perm = only(graph, "experts", seed)
    permuted = cipm.permute(model, perm)
    pairs = zip(model.parameters(), permuted.parameters(), strict=True)
    moved = any(not torch.equal(p, q) for p, q in pairs)
    assert moved or all(bool((perm[g.name] == torch.arange(g.size)).all()) for g in graph)
    a, b = logits(model, x), logits(permuted, x)
    assert float((a - b).abs().max() / a.abs().max()) < hf_families.tolerance(name)


def test_weight_matching_finds_a_planted_expert_permutation(moe: Any) -> None:
    _, model, _, graph = moe
    planted = cipm.permute(model, cipm.Permutation.random(graph, seed=11))
    found = cipm.align(model, planted, graph, method="weight")
    back = cipm.permute(planted, found)
    for (key, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_pruning_experts_equals_a_model_built_with_those_experts(moe: Any) -> None:
    """Half the experts pruned: the same as a model made from a config with half as many,
    holding the kept experts' weights and router rows (sliced here, by hand)."""
    _, model, x, graph = moe
    plans = cipm.pruning.prune_plan(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(kinds=("experts",))
    )
    small_result = cipm.prune(
        model, graph, ratio=0.5, config=cipm.PruneConfig(kinds=("experts",)), method="magnitude"
    )
    small = small_result.model
    assert not small_result.report.kept_whole
    config = model.config.to_dict()
    count = "num_local_experts" if "num_local_experts" in config else "num_experts"
    config[count] //= 2
    reference = type(model)(type(model.config).from_dict(config)).eval()
    state = model.state_dict()
    for i in range(2):
        keep = plans[f"model.layers.{i}.mlp:experts"].keep
        for key in ("gate.weight", "experts.gate_up_proj", "experts.down_proj"):
            full = f"model.layers.{i}.mlp.{key}"
            state[full] = state[full][keep]
    reference.load_state_dict(state)
    reference.to(next(model.parameters()).dtype)
    torch.testing.assert_close(logits(small, x), logits(reference, x), rtol=1e-5, atol=1e-6)


# -- the mechanism, on hand-written blocks ------------------------------------------------


class TopOne(nn.Module):
    """A top-1 mixture of experts written with plain ops: the router's argmax picks each
    token's expert matrix by index."""

    def __init__(self, width: int = 6, experts: int = 5, scale: torch.Tensor | None = None):
        super().__init__()
        self.router = nn.Linear(width, experts, bias=True)
        self.experts = Bank(experts, width)
        self.scale = scale  # a fixed weight per expert: breaks the symmetry
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        pick = logits.argmax(-1)
        y = torch.einsum("bi,bij->bj", x, self.experts.w[pick])
        if self.scale is not None:
            y = y * self.scale[pick][:, None]
        return self.head(y * logits.softmax(-1).amax(-1, keepdim=True))


class Bank(nn.Module):
    def __init__(self, experts: int, width: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(experts, width, width))


def toy(**kw: Any) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TopOne(**kw).double().eval(), torch.randn(16, 6, dtype=torch.float64)


def test_a_block_written_with_plain_ops_has_its_experts_found() -> None:
    model, x = toy()
    graph = cipm.trace(model, x)
    (g,) = graph.by_kind("experts")
    assert {(m.key, m.dim) for m in g.members} == {
        ("router.weight", 0), ("router.bias", 0), ("experts.w", 0)
    }  # fmt: skip
    permuted = cipm.permute(model, only(graph, "experts", 3))
    torch.testing.assert_close(model(x), permuted(x), rtol=1e-12, atol=1e-12)


def test_a_declaration_that_does_not_hold_is_left_out() -> None:
    """A fixed per-expert scale makes renumbering the experts change the output: the
    numbers refute the declaration, which is reported and left out."""
    scale = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    model, x = toy(scale=scale)
    with pytest.warns(cipm.CipmWarning, match="changes the module's output"):
        graph = cipm.trace(model, x)
    assert not graph.by_kind("experts")


class Declares:
    """A third-party plugin declaring a group on modules of one type."""

    def __init__(self, kind: type, members: Sequence[tuple[str, int]]) -> None:
        self.kind, self.members = kind, tuple(members)

    @cipm.hookimpl
    def cipm_module_groups(self, module: nn.Module) -> list[ModuleGroup] | None:
        if isinstance(module, self.kind):
            return [ModuleGroup(self.members, cipm.GroupKind.OTHER)]
        return None


@pytest.fixture
def declaring() -> Iterator[Any]:
    pm, plugins = cipm.get_plugin_manager(), []

    def register(kind: type, members: Sequence[tuple[str, int]]) -> None:
        plugins.append(Declares(kind, members))
        pm.register(plugins[-1])

    yield register
    for p in plugins:
        pm.unregister(p)


def test_a_declaration_the_ops_tie_to_more_than_it_names_is_left_out(declaring: Any) -> None:
    """The first layer's outputs are the second's inputs: declaring only the first layer's
    rows a group leaves the second's columns out; the trace says so."""
    declaring(nn.Sequential, [("0.weight", 0)])
    mlp = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)).double().eval()
    with pytest.warns(cipm.CipmWarning, match="the ops tie it to 0.bias dim 0, 1.weight dim 1"):
        graph = cipm.trace(mlp, torch.randn(3, 4, dtype=torch.float64))
    assert not graph.by_kind("other")


def test_a_declaration_whose_units_reach_the_outputs_is_left_out(declaring: Any) -> None:
    declaring(nn.Linear, [("weight", 0), ("bias", 0)])
    with pytest.warns(cipm.CipmWarning, match="the model returns its units"):
        graph = cipm.trace(nn.Linear(4, 3).double(), torch.randn(2, 4, dtype=torch.float64))
    assert len(graph) == 0


def test_a_malformed_declaration_is_a_plugin_error(declaring: Any) -> None:
    declaring(nn.Linear, [("weight", 0), ("weight", 1)])  # 3 rows, 4 columns
    with pytest.raises(cipm.PluginError, match="dims of different sizes"):
        cipm.trace(nn.Linear(4, 3).eval(), torch.randn(2, 4))


def test_experts_can_be_blocked_like_any_plugin() -> None:
    model, x = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing declared, nothing to refuse
        graph = cipm.trace(model, x, blocked_plugins=("mixture_of_experts",))
    assert not graph.by_kind("experts")
