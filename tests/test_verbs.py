"""Every verb has one shape: its request is validated once into a problem (the model's
tensors read and checked a single time), its method comes from a registry that plugins
extend, and its result says what was done."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import cipm
from cipm.examples import catalog
from cipm.tensors import fitted

QUIET = cipm.CollectConfig(progress=False)


@pytest.fixture(scope="module")
def mlp() -> tuple[torch.nn.Module, cipm.SymmetryGraph, list[torch.Tensor]]:
    model, x = catalog.build("mlp")
    model, x = model.double(), x.double()
    return model, cipm.trace(model, x), [x, 2 * x, x + 1]


def test_each_verb_reads_each_models_tensors_once(
    mlp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, graph, data = mlp
    other = cipm.permute(model, graph.random_permutation(seed=0))
    stats = cipm.collect(model, graph, data, config=QUIET)
    meta = cipm.MetaAnalyzer.pretrained()
    reads: collections.Counter[int] = collections.Counter()
    read = fitted.tensor_at

    def counted(module: torch.nn.Module, key: str) -> torch.Tensor:
        reads[id(module)] += 1
        return read(module, key)

    monkeypatch.setattr(fitted, "tensor_at", counted)
    verbs: dict[str, Callable[[], Any]] = {
        "collect": lambda: cipm.collect(model, graph, data, config=QUIET),
        "prune fold": lambda: cipm.prune(model, stats, ratio=0.5),
        "prune learned": lambda: cipm.prune(model, stats, ratio=0.5, method=meta.prune_method()),
        "canonicalize": lambda: cipm.canonicalize(model, graph, stats=stats),
        "canonicalize learned": lambda: cipm.canonicalize(
            model, graph, stats=stats, method=meta.order
        ),
        "reorganize": lambda: cipm.reorganize(model, stats),
        "partition": lambda: cipm.partition(model, stats, 2),
        "align weight": lambda: cipm.align(model, other, graph),
        "align learned-windowed": lambda: cipm.align(
            model, other, graph, method=lambda p: meta.solve(p, window=8), data=data
        ),
    }
    once = len(graph.axes)  # one read of every tensor a group lives in
    for name, verb in verbs.items():
        reads.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cipm.CipmWarning)
            verb()
        assert reads[id(model)] == once, name
        assert reads[id(other)] in (0, once), name


def test_every_verbs_method_is_an_open_registry(mlp: Any) -> None:
    """A plugin adds a method to each verb; the verb finds it by name."""
    model, graph, data = mlp
    stats = cipm.collect(model, graph, data, config=QUIET)
    reverse = {g.name: torch.arange(g.size - 1, -1, -1) for g in graph}

    class Reversed:
        @cipm.hookimpl
        def cipm_align_methods(self) -> dict[str, Any]:
            return {"reversed": lambda problem: cipm.Permutation(problem.graph, reverse)}

        @cipm.hookimpl
        def cipm_canonical_methods(self) -> dict[str, Any]:
            return {"reversed": lambda problem: cipm.Permutation(problem.graph, reverse)}

        @cipm.hookimpl
        def cipm_reorganize_methods(self) -> dict[str, Any]:
            return {"reversed": lambda problem: {g: reverse[g] for g in problem.groups}}

        @cipm.hookimpl
        def cipm_prune_methods(self) -> dict[str, Any]:
            last = cipm.PruneMethod(
                lambda problem: {g: torch.arange(float(graph[g].size)) for g in problem.targets},
                fold=False,
            )
            return {"last": last}

    plugin = Reversed()
    pm = cipm.get_plugin_manager()
    pm.register(plugin, name="reversed-methods")
    try:
        assert {"reversed"} <= set(cipm.align_methods())
        assert {"last"} <= set(cipm.prune_methods())
        assert {"reversed"} <= set(cipm.ordering.canonical_methods())
        assert {"reversed"} <= set(cipm.ordering.reorganize_methods())
        want = cipm.Permutation(graph, reverse)
        assert cipm.align(model, model, graph, method="reversed") == want
        assert cipm.reorganize(model, stats, method="reversed") == want
        canon = cipm.canonicalize(model, graph, method="reversed")
        assert torch.equal(canon[0].weight, model[0].weight.flip(0))
        pruned = cipm.prune(model, graph, sizes={"0:hidden": 3}, method="last")
        assert pruned.report.kept == {"0:hidden": (29, 30, 31)}  # the highest scores
        assert torch.equal(pruned.model[0].weight, model[0].weight[29:])
    finally:
        pm.unregister(plugin)
    with pytest.raises(cipm.CipmError, match=r"unknown prune method 'last'"):
        cipm.prune(model, graph, ratio=0.5, method="last")


def test_the_analytic_core_never_imports_the_meta_room() -> None:
    """`"learned"` is the meta room's plugin: no room below it imports it."""
    import test_layout

    below = {"alignment", "merging", "ordering", "pruning", "statistics", "exporting"}
    for name in test_layout.modules():
        if test_layout._room(name) in below:
            assert not any(d.startswith("cipm.meta") for d in test_layout._imports(name)), name


def test_a_prune_methods_bad_scores_are_a_clear_error(mlp: Any) -> None:
    model, graph, _ = mlp
    short = cipm.PruneMethod(lambda problem: {"0:hidden": torch.ones(3)}, fold=False)
    with pytest.raises(cipm.CipmError, match=r"group '0:hidden' one score per unit \(32\)"):
        cipm.prune(model, graph, sizes={"0:hidden": 2}, method=short)
    missing = cipm.PruneMethod(lambda problem: {}, fold=False)
    with pytest.raises(cipm.CipmError, match=r"scores must give group '0:hidden'.*got None"):
        cipm.prune(model, graph, sizes={"0:hidden": 2}, method=missing)


def test_a_method_that_returns_no_permutation_is_a_clear_error(mlp: Any) -> None:
    model, graph, _ = mlp
    with pytest.raises(
        cipm.CipmError, match=r"alignment method .* must return a cipm\.Permutation"
    ):
        cipm.align(model, model, graph, method=lambda problem: None)
    with pytest.raises(
        cipm.CipmError, match=r"canonical method .* must return a cipm\.Permutation"
    ):
        cipm.canonicalize(model, graph, method=lambda problem: {})
