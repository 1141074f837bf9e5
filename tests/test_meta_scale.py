"""Alignment at scale: windowed refinement of a learned alignment, and weight matching's
solve counter and warm start (issue 15)."""

from __future__ import annotations

import pytest
import torch
from conftest import traced
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.alignment.descent import Descent, DescentStats, Plan, matched_weights
from cipm.alignment.weight import weight_matching
from cipm.alignment.windowed import windowed_matching, windows_of
from cipm.examples import catalog
from cipm.tensors.fitted import fitted_tensors


def mlp(seed: int, width: int = 48) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3)
    ).double()


@pytest.fixture(scope="module")
def graph() -> cipm.SymmetryGraph:
    return cipm.trace(mlp(0), torch.randn(2, 10, dtype=torch.float64))


def states(a: nn.Module, b: nn.Module, graph: cipm.SymmetryGraph) -> tuple[dict, dict]:
    return fitted_tensors(a, graph), fitted_tensors(b, graph)


def scrambled(
    truth: cipm.Permutation, order: cipm.Permutation, window: int, offset: int, seed: int
) -> dict:
    """`truth` with units shuffled inside runs of `window` of `order`, the first `offset`
    long (`windows_of`)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in truth.items():
        t = t.clone()
        for run in windows_of(order[name], window, offset):
            t[run] = t[run[torch.randperm(len(run), generator=gen)]]
        out[name] = t
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), window=st.integers(2, 20))
def test_windowed_never_scores_below_its_start(
    graph: cipm.SymmetryGraph, seed: int, window: int
) -> None:
    a, b = mlp(seed % 1000), mlp(seed % 1000 + 1)
    sa, sb = states(a, b, graph)
    start = graph.random_permutation(seed=seed)
    order = graph.random_permutation(seed=seed + 1)
    stats = DescentStats()
    found = windowed_matching(sa, sb, graph, start, order=order, window=window, stats=stats)
    assert matched_weights(sa, sb, graph, found) >= matched_weights(sa, sb, graph, start) - 1e-9
    assert stats.sweeps >= 1 and stats.solves >= stats.sweeps * len(graph)
    # a group no larger than the window is one exact assignment: weight matching's step
    whole = windowed_matching(sa, sb, graph, start, window=48, max_sweeps=1)
    first = weight_matching(sa, sb, graph, start=start, max_sweeps=1)
    assert torch.equal(whole[graph.groups[0].name], first[graph.groups[0].name])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("which", [0, 1])
def test_windowed_recovers_a_planted_permutation(
    graph: cipm.SymmetryGraph, seed: int, which: int
) -> None:
    """One group's units shuffled inside runs of `window` of an order (the others right:
    with all of them wrong, any coordinate descent can stop at a local optimum) come back
    exactly; shuffled inside the shifted runs (which the first, unshifted pass cuts through)
    most do, and windowed search can stop at a local optimum (cycles across windows)."""
    a = mlp(seed)
    planted = graph.random_permutation(seed=seed)
    b = cipm.permute(a, planted)
    truth = planted.inverse()  # B's permutation onto A
    order = graph.random_permutation(seed=seed + 10)
    name = graph.groups[which].name
    sa, sb = states(a, b, graph)
    start = {**truth, name: scrambled(truth, order, 16, 0, seed)[name]}
    stats = DescentStats()
    found = windowed_matching(sa, sb, graph, start, order=order, window=16, stats=stats)
    assert found == truth and cipm.Permutation(graph, start) != truth
    assert stats.sweeps >= 2  # the last changes nothing
    shifted = {**truth, name: scrambled(truth, order, 16, 8, seed)[name]}
    found = windowed_matching(sa, sb, graph, shifted, order=order, window=16)
    before = int((shifted[name] != truth[name]).sum())
    assert before > 30 and int((found[name] != truth[name]).sum()) <= before // 4


def test_window_costs_are_the_full_costs_restricted() -> None:
    for name in ("mlp", "transformer_pre_norm"):  # heads over head_dim: the nested case
        graph = traced(name)
        a, _ = catalog.build(name, seed=0)
        b, _ = catalog.build(name, seed=1)
        sa, sb = states(a, b, graph)
        run = Descent(Plan(graph, {}), sa, sb, graph.random_permutation(seed=3))
        for group in graph:
            order = torch.randperm(group.size, generator=torch.Generator().manual_seed(4))
            windows = windows_of(order, max(2, group.size // 3), 1)
            full = run.cost(group.name)
            for s, cost in zip(windows, run.window_costs(group.name, windows), strict=True):
                torch.testing.assert_close(cost, full[s][:, s], rtol=1e-5, atol=1e-5)


def test_weight_matching_counts_solves_and_stops_at_once_from_its_fixed_point(
    graph: cipm.SymmetryGraph,
) -> None:
    a, b = mlp(5), mlp(6)
    sa, sb = states(a, b, graph)
    cold = DescentStats()
    fixed = weight_matching(sa, sb, graph, stats=cold)
    assert cold.solves > len(graph) and cold.sweeps >= 2
    assert weight_matching(sa, sb, graph) == fixed  # counting changes nothing
    warm = DescentStats()
    assert weight_matching(sa, sb, graph, start=fixed, stats=warm) == fixed
    assert (warm.solves, warm.sweeps) == (len(graph), 1)


def test_learned_windowed_method_recovers_a_permuted_copy(graph: cipm.SymmetryGraph) -> None:
    a = mlp(7)
    planted = graph.random_permutation(seed=7)
    b = cipm.permute(a, planted)
    data = [torch.randn(64, 10, dtype=torch.float64) for _ in range(2)]
    found = cipm.align(a, b, graph, method="learned-windowed", data=data)
    assert found == planted.inverse()
    with pytest.raises(cipm.CipmError, match="needs data"):
        cipm.align(a, b, graph, method="learned-windowed")


def test_windowed_errors(graph: cipm.SymmetryGraph) -> None:
    sa, sb = states(mlp(0), mlp(1), graph)
    start = cipm.Permutation.identity(graph)
    for window in (1, 0, 2.5, True):
        with pytest.raises(cipm.CipmError, match="window"):
            windowed_matching(sa, sb, graph, start, window=window)  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match="max_sweeps"):
        windowed_matching(sa, sb, graph, start, max_sweeps=0)
    with pytest.raises(cipm.CipmError, match="not a permutation"):
        windowed_matching(
            sa, sb, graph, {g.name: torch.zeros(g.size, dtype=torch.long) for g in graph}
        )
