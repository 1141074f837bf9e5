"""Alignment: weight and activation matching recover a permuted copy exactly, for any model."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_state_equal, snapshot, traced
from hypothesis import given
from hypothesis import strategies as st

import cipm
from cipm.examples import catalog

ZOO_NAMES = sorted(catalog.MODELS)


def data_for(name: str, n: int = 3) -> list[torch.Tensor]:
    return [catalog.build(name, seed=100 + i)[1] for i in range(n)]


@pytest.mark.parametrize("name", ZOO_NAMES)
@given(seed=st.integers(0, 2**31 - 1))
def test_weight_matching_recovers_the_inverse(name: str, seed: int) -> None:
    graph = traced(name)
    model, _ = catalog.build(name)
    perm = graph.random_permutation(seed=seed)
    permuted = cipm.permute(model, perm)
    # restarts: layers cloned from one another (nn.TransformerEncoder) leave a local optimum
    # in about 2 % of group orders; a second order escapes it
    config = cipm.AlignConfig(seed=seed, restarts=3)
    found = cipm.align(model, permuted, graph, method="weight", config=config)
    assert found == perm.inverse()
    assert_state_equal(cipm.permute(permuted, found), model)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_activation_matching_recovers_the_inverse(name: str) -> None:
    graph = traced(name)
    model, _ = catalog.build(name)
    perm = graph.random_permutation(seed=11)
    permuted = cipm.permute(model, perm)
    found = cipm.align(model, permuted, graph, method="activation", data=data_for(name))
    assert found == perm.inverse()


def test_align_leaves_models_unchanged_and_checks_input() -> None:
    graph = traced("mlp")
    a, _ = catalog.build("mlp")
    b, _ = catalog.build("mlp", seed=1)
    before_a, before_b = snapshot(a), snapshot(b)
    cipm.align(a, b, graph)
    for model, before in ((a, before_a), (b, before_b)):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(cipm.CipmError, match="needs data"):
        cipm.align(a, b, graph, method="activation")
    with pytest.raises(cipm.CipmError, match="unknown alignment method"):
        cipm.align(a, b, graph, method="sinkhorn-ish")  # type: ignore[arg-type]
    narrow, _ = catalog.mlp(width=16)
    with pytest.raises(cipm.CipmError, match=r"model_b.*0:hidden"):
        cipm.align(a, narrow, graph)
    with torch.no_grad():
        b[0].weight[0, 0] = float("nan")
    with pytest.raises(cipm.CipmError, match=r"non-finite values in '0.weight'"):
        cipm.align(a, b, graph)


def test_aligning_two_different_models_brings_weights_closer() -> None:
    graph = traced("resnet20")
    a, _ = catalog.build("resnet20", seed=1)
    b, _ = catalog.build("resnet20", seed=2)
    with torch.no_grad():  # B = A + noise, then shuffled: alignment must undo the shuffle
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            pb.copy_(pa + 0.01 * torch.randn_like(pa))
    shuffled = cipm.permute(b, graph.random_permutation(seed=5))
    aligned = cipm.permute(shuffled, cipm.align(a, shuffled, graph))

    def distance(m: torch.nn.Module) -> float:
        return sum(
            float((p - q).detach().square().sum())
            for p, q in zip(a.parameters(), m.parameters(), strict=True)
        )

    assert distance(aligned) == pytest.approx(distance(b), rel=1e-6)
    assert distance(shuffled) > 10 * distance(aligned)


@pytest.mark.parametrize("name", ["mlp", "resnet20", "gpt", "cnn_groupnorm"])
def test_align_many_brings_permuted_copies_into_one_order(name: str) -> None:
    graph = traced(name)
    model, _ = catalog.build(name)
    perms = [graph.random_permutation(seed=s) for s in range(4)]
    copies = [cipm.permute(model, p) for p in perms]
    found = cipm.align_many(copies, graph)
    assert found[0].is_identity()  # the common order is the first model's
    for copy, perm, p in zip(copies, found, perms, strict=True):
        assert perm == p.inverse().compose(perms[0])
        assert_state_equal(cipm.permute(copy, perm), copies[0])


def test_align_many_needs_two_models() -> None:
    with pytest.raises(cipm.CipmError, match="at least two"):
        cipm.align_many([catalog.build("mlp")[0]], traced("mlp"))


def test_indirect_alignment_through_a_third_model() -> None:
    graph = traced("gpt")
    model, _ = catalog.build("gpt")
    p, q = graph.random_permutation(seed=1), graph.random_permutation(seed=2)
    b, c = cipm.permute(model, p), cipm.permute(model, q)
    found = cipm.align(model, b, graph, via=c)
    assert found == p.inverse()


def test_ste_matching_recovers_a_permuted_copy_and_keeps_its_loss_low() -> None:
    torch.manual_seed(0)
    graph = traced("mlp")
    model, _ = catalog.build("mlp")
    perm = graph.random_permutation(seed=4)
    permuted = cipm.permute(model, perm)
    gen = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen))
        for _ in range(3)
    ]
    found = cipm.align(model, permuted, graph, method="ste", data=data)
    assert found == perm.inverse()
    with pytest.raises(cipm.CipmError, match="ste matching needs data"):
        cipm.align(model, permuted, graph, method="ste")


@pytest.mark.parametrize("name", ["gpt", "cnn_groupnorm", "densenet"])
def test_map_units_with_a_permutation_matrix_is_index_select(name: str) -> None:
    from cipm.graph.layout import index_map
    from cipm.tensors.units import map_units

    graph = traced(name)
    model, _ = catalog.build(name)
    perm = graph.random_permutation(seed=1)
    for axis in graph.axes:
        t = model.state_dict()[axis.key].double()
        got = t
        for group in dict.fromkeys(axis.groups()):
            n = graph[group].size
            matrix = torch.zeros(n, n, dtype=torch.float64)
            matrix[torch.arange(n), perm[group]] = 1.0
            got = map_units(got, axis.dim, axis.layout, {group: matrix})
        assert torch.equal(got, t.index_select(axis.dim, index_map(axis.layout, perm)))


def test_sinkhorn_rounding_alone_recovers_a_permuted_copy() -> None:
    from cipm.alignment.sinkhorn import sinkhorn_matching
    from cipm.tensors.fitted import fitted_tensors

    graph = traced("mlp")
    model, _ = catalog.build("mlp")
    perm = graph.random_permutation(seed=1)
    copy = cipm.permute(model, perm)
    state_a, state_b = fitted_tensors(model, graph), fitted_tensors(copy, graph)
    assert sinkhorn_matching(state_a, state_b, graph, polish=False) == perm.inverse()
    assert cipm.align(model, copy, graph, method="sinkhorn") == perm.inverse()
