"""Canonicalization: all permuted copies of a model share one canonical form, same function."""

from __future__ import annotations

from itertools import pairwise

import pytest
import test_transformers as hf
import torch
from conftest import as_double, assert_same_function, assert_state_equal, traced
from hypothesis import given
from hypothesis import strategies as st

import cipm
from cipm.examples import catalog

ZOO_NAMES = sorted(catalog.MODELS)
HF_NAMES = sorted(hf.MODELS)


def differing(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def zoo_batches(name: str, n: int, seed: int) -> list[torch.Tensor]:
    """n fresh example inputs of a zoo model (float64 where floating)."""
    out = []
    for i in range(n):
        x = catalog.build(name, seed=seed + i)[1]
        out.append(x.double() if x.is_floating_point() else x)
    return out


# -- permutation invariance, idempotence, same function -------------------------------------


@pytest.mark.parametrize("name", ZOO_NAMES)
@given(seed=st.integers(0, 2**31 - 1), model_seed=st.integers(0, 100))
def test_zoo_canonical_form_is_permutation_invariant(name: str, seed: int, model_seed: int) -> None:
    graph = traced(name)
    model, x = as_double(*catalog.build(name, seed=model_seed))
    perm = graph.random_permutation(seed=seed)
    permuted = cipm.permute(model, perm)
    assert differing(model, permuted)  # the permutation really moved weights

    canon = cipm.canonicalize(model, graph)
    assert_state_equal(cipm.canonicalize(permuted, graph), canon)  # bit-for-bit
    assert cipm.canonical_permutation(canon, graph).is_identity()  # idempotent
    assert_same_function(model, canon, x)


@pytest.mark.parametrize("name", HF_NAMES)
@given(seed=st.integers(0, 2**31 - 1))
def test_hf_canonical_form_is_permutation_invariant(name: str, seed: int) -> None:
    model, x, graph = hf.traced(name)
    perm = graph.random_permutation(seed=seed)
    permuted = cipm.permute(model, perm)
    assert differing(model, permuted)

    cperm = cipm.canonical_permutation(model, graph)
    canon = cipm.canonicalize(model, graph)
    assert_state_equal(canon, cipm.permute(model, cperm))
    assert_state_equal(cipm.canonicalize(permuted, graph), canon)
    assert cipm.canonical_permutation(canon, graph).is_identity()

    tol = hf.MODELS[name][3]
    with torch.no_grad():
        expected = hf.first_output(model(**x))
        got = hf.first_output(canon(**x))
    torch.testing.assert_close(cperm.restore_output(got, 0), expected, rtol=tol, atol=tol)
    if hf.MODELS[name][2] == "free":  # the control: the canonical output really is reordered
        assert not torch.allclose(got, expected)
    # the canonical model reached from the permuted copy computes the same, too: its canonical
    # permutation, restored, undoes both moves
    pperm = cipm.canonical_permutation(permuted, graph)
    torch.testing.assert_close(
        perm.restore_output(pperm.restore_output(got, 0), 0), expected, rtol=tol, atol=tol
    )


def test_canonical_permutation_of_a_permuted_model_undoes_the_permutation() -> None:
    """perm then canonical(permuted) is the same overall order as canonical(model)."""
    graph = traced("resnet20")
    model = catalog.build("resnet20")[0].double()
    perm = graph.random_permutation(seed=3)
    direct = cipm.canonical_permutation(model, graph)
    via = perm.compose(cipm.canonical_permutation(cipm.permute(model, perm), graph))
    assert via == direct
    assert not direct.is_identity()


# -- the activation key --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "gpt"])
def test_activation_key_is_permutation_invariant(name: str) -> None:
    graph = traced(name)
    model = catalog.build(name, seed=4)[0].double()
    loader = zoo_batches(name, 3, seed=50)
    perm = graph.random_permutation(seed=9)
    permuted = cipm.permute(model, perm)

    stats = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    pstats = cipm.collect(permuted, graph, loader, config=cipm.CollectConfig(progress=False))
    canon = cipm.canonicalize(model, graph, stats=stats)
    assert_state_equal(cipm.canonicalize(permuted, graph, stats=pstats), canon)
    assert_same_function(model, canon, loader[0])
    # the activation key is a different order from the weight key: stats really were used
    by_weights = cipm.canonical_permutation(model, graph)
    assert cipm.canonical_permutation(model, graph, stats=stats) != by_weights


def test_activation_key_orders_by_activation_rms() -> None:
    graph = traced("mlp")
    model = catalog.build("mlp", seed=2)[0].double()
    loader = zoo_batches("mlp", 3, seed=70)
    stats = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    canon = cipm.canonicalize(model, graph, stats=stats)
    # RMS of each hidden ReLU output of the canonical model, computed directly
    acts: dict[int, list[torch.Tensor]] = {1: [], 3: [], 5: []}
    with torch.no_grad():
        for x in loader:
            h = x
            for i, layer in enumerate(canon):
                h = layer(h)
                if i in acts:
                    acts[i].append(h)
    for i, rows in acts.items():
        rms = torch.cat(rows).square().mean(0).sqrt()
        assert bool((rms[:-1] >= rms[1:] * (1 - 1e-8)).all()), i


# -- the order means something ---------------------------------------------------------------


def weight_path_magnitude(model: torch.nn.Sequential) -> list[torch.Tensor]:
    """Per hidden layer of a zoo MLP: ||incoming row, bias|| * ||outgoing column||."""
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    out = []
    for first, second in pairwise(linears):
        made = first.weight.square().sum(1) + first.bias.square()
        used = second.weight.square().sum(0)
        out.append((made * used).sqrt())
    return out


@given(model_seed=st.integers(0, 10_000), seed=st.integers(0, 2**31 - 1))
def test_canonical_mlp_sorts_units_by_weight_path_magnitude(model_seed: int, seed: int) -> None:
    graph = traced("mlp")
    model = catalog.build("mlp", seed=model_seed)[0].double()
    before = weight_path_magnitude(model)
    assert not all(bool((m[:-1] >= m[1:]).all()) for m in before)  # not sorted to begin with
    canon = cipm.canonicalize(cipm.permute(model, graph.random_permutation(seed=seed)), graph)
    after = weight_path_magnitude(canon)
    for m, b in zip(after, before, strict=True):
        assert bool((m[:-1] >= m[1:]).all()), m
        torch.testing.assert_close(m, b.sort(descending=True).values, rtol=1e-12, atol=0)


# -- negative control ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "resnet20", "gpt"])
def test_different_models_have_different_canonical_forms(name: str) -> None:
    graph = traced(name)
    a = catalog.build(name, seed=1)[0].double()
    b = catalog.build(name, seed=2)[0].double()
    ca, cb = cipm.canonicalize(a, graph), cipm.canonicalize(b, graph)
    weights = [k for k, v in ca.state_dict().items() if v.is_floating_point() and v.dim() >= 2]
    diff = set(differing(ca, cb))
    assert all(k in diff for k in weights)


def test_canonicalize_leaves_the_model_unchanged() -> None:
    graph = traced("gpt")
    model = catalog.build("gpt")[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canon = cipm.canonicalize(model, graph)
    assert canon is not model and differing(model, canon)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
