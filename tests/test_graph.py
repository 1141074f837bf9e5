"""Symmetry graph data and Permutation algebra."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import traced
from hypothesis import given
from hypothesis import strategies as st

import cipm
from cipm.examples import catalog
from cipm.graph.layout import Leaf, Product, Sum, index_map


@pytest.mark.parametrize("name", ["resnet20", "gpt", "cnn_groupnorm"])
def test_json_round_trip(name: str) -> None:
    graph = traced(name)
    again = cipm.SymmetryGraph.from_json(graph.to_json())
    assert again == graph
    assert str(again) == str(graph)
    # sample counts stay out of equality, so compare them apart
    assert [s.samples for g in again for s in g.sites] == [
        s.samples for g in graph for s in g.sites
    ]


def test_graph_json_written_before_site_samples_still_loads() -> None:
    graph = traced("resnet20")
    data = json.loads(graph.to_json())
    for group in data["groups"]:
        group["sites"] = [site[:5] for site in group["sites"]]  # the older five-field sites
    old = cipm.SymmetryGraph.from_json(json.dumps(data))
    assert old == graph
    assert {s.samples for g in old for s in g.sites} == {0}


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(cipm.CipmError, match="not a cipm symmetry graph"):
        cipm.SymmetryGraph.from_json('{"groups": []}')


def test_table_lists_every_group() -> None:
    text = str(traced("gpt"))
    assert text.startswith("SymmetryGraph of GPT: 9 groups")
    for group in traced("gpt"):
        assert group.name in text


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_inverse_and_compose(a: int, b: int) -> None:
    graph = traced("resnet20")
    p, q = graph.random_permutation(seed=a), graph.random_permutation(seed=b)
    assert p.compose(p.inverse()).is_identity()
    assert p.inverse().inverse() == p
    assert p.compose(graph.identity()) == p
    pq = p.compose(q)
    for name in p:  # pq[i] = p[q[i]]: permute by p, then by q
        assert torch.equal(pq[name], p[name][q[name]])


def test_compose_matches_sequential_permutes() -> None:
    graph = traced("gpt")
    from cipm.examples import catalog

    model, _ = catalog.build("gpt")
    p, q = graph.random_permutation(seed=1), graph.random_permutation(seed=2)
    one = cipm.permute(model, p.compose(q))
    two = cipm.permute(cipm.permute(model, p), q)
    for k, v in one.state_dict().items():
        assert torch.equal(v, two.state_dict()[k]), k


def test_index_map_of_products_and_sums() -> None:
    graph = traced("mlp")
    perm = cipm.Permutation(graph, {g.name: torch.arange(g.size).flip(0) for g in graph})
    heads = Product((Leaf(32, "0:hidden"), Leaf(2)))  # a unit spanning two positions
    idx = index_map(heads, perm)
    assert idx[:4].tolist() == [62, 63, 60, 61]
    qkv = Sum((Leaf(32, "0:hidden"), Leaf(3), Leaf(32, "2:hidden")))
    idx = index_map(qkv, perm)
    assert idx[:2].tolist() == [31, 30] and idx[32:35].tolist() == [32, 33, 34]
    assert idx[35].item() == 35 + 31


def test_permutation_is_read_only_view() -> None:
    graph = traced("mlp")
    source = {g.name: torch.arange(g.size) for g in graph}
    perm = cipm.Permutation(graph, source)
    source["0:hidden"][0] = 5  # mutating the input afterwards does not reach the permutation
    assert perm["0:hidden"][0] == 0


@pytest.mark.parametrize("name", ["mlp", "resnet20", "densenet", "encoder", "gpt"])
def test_resized_graph_is_the_graph_of_the_pruned_model(name: str) -> None:
    """SymmetryGraph.resized predicts, without tracing, what tracing a pruned model finds."""
    from cipm.pruning import prune_plan

    graph = traced(name)
    model, x = catalog.build(name)
    sizes = {
        n: len(p.keep) for n, p in prune_plan(model, graph, ratio=0.5, method="magnitude").items()
    }
    pruned = cipm.prune(model, graph, ratio=0.5, method="magnitude").model
    assert sizes and graph.resized(sizes) == cipm.trace(pruned, x)
