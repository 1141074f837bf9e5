"""Bad input gets a CipmError naming what and where, and the caller's model is untouched."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch
from conftest import snapshot, traced
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.cli import main
from cipm.examples import catalog


def mlp() -> tuple[nn.Module, torch.Tensor, cipm.SymmetryGraph]:
    model, x = catalog.build("mlp")
    return model, x, traced("mlp")


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_permutation_cannot_be_changed_through_what_it_hands_out() -> None:
    model, x, graph = mlp()
    perm = graph.random_permutation(seed=0)
    name = graph.groups[0].name
    handed = perm[name]
    handed[0] = handed[1]  # would make the indices a non-permutation
    for _, indices in perm.items():
        indices.zero_()
    permuted = cipm.permute(model, perm)
    torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(perm[name].sort().values, torch.arange(graph[name].size))


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Flipped(Chain):
    """The same tensor names and shapes, other wiring: fc2's units are read reversed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))).flip(-1))


def test_a_graph_refuses_a_model_wired_otherwise() -> None:
    x = torch.randn(3, 4)
    graph = cipm.trace(Chain().eval(), x)
    other = Flipped().eval()
    before = snapshot(other)
    with pytest.raises(cipm.PermutationError, match="not wired like the model"):
        cipm.permute(other, graph.random_permutation(seed=0))
    assert unchanged(other, before)
    again = cipm.SymmetryGraph.from_json(graph.to_json())
    assert again.structure == graph.structure
    cipm.permute(Chain().eval(), again.random_permutation(seed=0))  # same wiring: fine


def test_non_finite_data_and_weights_are_refused(tmp_path: Path) -> None:
    model, x, graph = mlp()
    before = snapshot(model)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(cipm.CipmError, match="non-finite"):
        cipm.prune(model, graph, ratio=0.5, data=[x, bad], config=cipm.PruneConfig(progress=False))
    with pytest.raises(cipm.CipmError, match="finite"):
        cipm.merge([model, model], weights=[math.nan, 1.0])
    assert unchanged(model, before)
    path, data, out = tmp_path / "m.pt", tmp_path / "d.pt", tmp_path / "small.pt"
    torch.save(model, path)
    torch.save(torch.full((16, x.shape[1]), float("inf")), data)
    shape = ",".join(map(str, x.shape))
    argv = ["prune", str(path), "--unsafe-pickle", "--input", shape, "--ratio", "0.5"]
    assert main([*argv, "--data", str(data), "-o", str(out)]) == 2
    assert not out.exists()


def test_each_reproduced_raw_exception_is_now_a_cipm_error() -> None:
    model, x, graph = mlp()
    before = snapshot(model)
    name = graph.groups[0].name
    stats = cipm.collect(model, graph, [x], config=cipm.CollectConfig(progress=False))
    tampered = graph.to_dict()
    tampered["groups"][0]["size"] = 5
    meta = catalog.mlp()[0].to("meta")
    cases = [
        (lambda: cipm.permute(model, None), "needs a cipm.Permutation"),
        (lambda: cipm.permute(model, {name: torch.arange(32)}), "needs a cipm.Permutation"),
        (lambda: cipm.Permutation(None, {}), "needs a SymmetryGraph"),  # type: ignore[arg-type]
        (lambda: cipm.Permutation(graph, None), "mapping of group name"),  # type: ignore[arg-type]
        (lambda: cipm.Permutation(graph, {g.name: ["a"] * g.size for g in graph}), "numbers"),
        (lambda: cipm.SymmetryGraph.from_json("{not json"), "not JSON"),
        (lambda: cipm.SymmetryGraph.from_dict(tampered), "holds 32 units of group"),
        (lambda: graph.random_permutation(seed="a"), "seed must be"),  # type: ignore[arg-type]
        (
            lambda: cipm.collect(model, graph, x, config=cipm.CollectConfig(progress=False)),
            "one tensor",
        ),
        (
            lambda: cipm.collect(model, graph, None, config=cipm.CollectConfig(progress=False)),
            "no data",
        ),  # type: ignore[arg-type]
        (
            lambda: cipm.collect(
                model, graph, [x.double()], config=cipm.CollectConfig(progress=False)
            ),
            "batch 0 does not fit",
        ),
        (
            lambda: cipm.collect(
                model, graph, [x.long()], config=cipm.CollectConfig(progress=False)
            ),
            "batch 0 does not fit",
        ),
        (
            lambda: (
                cipm.prune(model, stats, ratio=0.5, config=cipm.PruneConfig(kinds=("nope",))).model
            ),
            "unknown group kinds",
        ),
        (lambda: cipm.prune(model, stats, ratio="0.5").model, "ratio must be a number"),  # type: ignore[arg-type]
        (lambda: cipm.prune(model, stats, sizes={name: 2.5}).model, "whole number"),  # type: ignore[dict-item]
        (lambda: cipm.partition(model, stats, k=100), "cannot cut into 100 blocks"),
        (lambda: cipm.merge(model), "takes a list of models"),  # type: ignore[arg-type]
        (lambda: cipm.AlignConfig(restarts=-1), "restarts must be a whole number >= 1"),
        (lambda: cipm.canonicalize(meta, graph), "meta device"),
        (lambda: cipm.trace(model, x, blocked_plugins=("nosuch",)), "no plugin named"),
    ]
    for call, message in cases:
        with pytest.raises(cipm.CipmError, match=message):
            call()
    assert unchanged(model, before)


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just([]),
    st.just({}),
    st.just(torch.randn(2, 3)),
    st.just([torch.full((4, 8), float("nan"))]),
    st.just([torch.randn(4, 5)]),
)


@settings(max_examples=120)
@given(st.sampled_from(["permute", "prune", "collect", "merge", "align", "partition"]), JUNK, JUNK)
def test_malformed_input_to_any_entry_point_is_a_cipm_error(
    entry: str, a: object, b: object
) -> None:
    model, x, graph = mlp()
    before = snapshot(model)
    stats = cipm.collect(model, graph, [x], config=cipm.CollectConfig(progress=False))
    calls = {
        "permute": lambda: cipm.permute(model, a),  # type: ignore[arg-type]
        "prune": lambda: cipm.prune(model, stats, ratio=a, sizes=b).model,  # type: ignore[arg-type]
        "collect": lambda: cipm.collect(
            model, graph, a, config=cipm.CollectConfig(sample=b, progress=False)
        ),  # type: ignore[arg-type]
        "merge": lambda: cipm.merge([model, model], weights=a, data=b),  # type: ignore[arg-type]
        "align": lambda: cipm.align(model, model, graph, method=a, data=b),  # type: ignore[arg-type]
        "partition": lambda: cipm.partition(model, stats, k=a, groups=b),  # type: ignore[arg-type]
    }
    with contextlib.suppress(cipm.CipmError):  # anything else fails the test
        calls[entry]()
    assert unchanged(model, before)
