"""Property tests: every permutation the tracer finds preserves the function, exactly undone."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import as_double, assert_same_function, assert_state_equal, snapshot, traced
from hypothesis import given
from hypothesis import strategies as st

import cipm
from cipm.examples import catalog

ZOO_NAMES = sorted(catalog.MODELS)


@pytest.mark.parametrize("name", ZOO_NAMES)
@given(seed=st.integers(0, 2**31 - 1), model_seed=st.integers(0, 100))
def test_random_permutation_preserves_function(name: str, seed: int, model_seed: int) -> None:
    graph = traced(name)
    model, x = as_double(*catalog.build(name, seed=model_seed))
    before = snapshot(model)
    perm = graph.random_permutation(seed=seed)
    permuted = cipm.permute(model, perm)
    assert_same_function(model, permuted, x)
    assert any(  # the permutation really moved weights (so the equality above means something)
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), permuted.state_dict().values(), strict=True)
    )
    restored = cipm.permute(permuted, perm.inverse())
    assert_state_equal(model, restored)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched


@given(
    depth=st.integers(1, 4),
    width=st.integers(2, 24),
    bias=st.booleans(),
    activation=st.sampled_from(sorted(catalog.ACTIVATIONS)),
    seed=st.integers(0, 2**31 - 1),
)
def test_mlp_any_shape(depth: int, width: int, bias: bool, activation: str, seed: int) -> None:
    torch.manual_seed(seed)
    model, x = as_double(*catalog.mlp(depth, width, bias, activation))
    graph = cipm.trace(model, x)
    assert [(g.size, g.kind) for g in graph] == [(width, cipm.GroupKind.HIDDEN)] * depth
    perm = graph.random_permutation(seed=seed)
    assert_same_function(model, cipm.permute(model, perm), x)
    assert_state_equal(model, cipm.permute(cipm.permute(model, perm), perm.inverse()))


@pytest.mark.parametrize("name", ["resnet20", "gpt", "transformer_pre_norm"])
def test_each_group_alone_preserves_function(name: str) -> None:
    """Permuting one group at a time (others identity) is also exact: groups are independent."""
    graph = traced(name)
    model, x = as_double(*catalog.build(name))
    for group in graph:
        indices = {g.name: torch.arange(g.size) for g in graph}
        indices[group.name] = torch.randperm(group.size, generator=torch.Generator().manual_seed(1))
        assert_same_function(model, cipm.permute(model, cipm.Permutation(graph, indices)), x)


def test_wrong_permutation_changes_function() -> None:
    """Control: permuting one member axis without its co-inverse does change the output."""
    model, x = as_double(*catalog.build("mlp"))
    broken = catalog.build("mlp")[0].double()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken[0].weight.copy_(broken[0].weight.flip(0))
    with pytest.raises(AssertionError):
        assert_same_function(model, broken, x)


def test_training_mode_model_is_traced_in_eval_and_left_in_training() -> None:
    model, x = catalog.build("resnet20")
    model.train()
    before = snapshot(model)
    with pytest.warns(cipm.CipmWarning, match="training mode"):
        graph = cipm.trace(model, x)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(graph) == len(traced("resnet20"))
