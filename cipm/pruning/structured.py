"""`cipm.prune`: structured pruning through the symmetry graph, into a physically smaller model.

Pruning a group keeps k of its n units. Every member tensor of the group is mapped through a
(k, n) matrix along the group's axis (`cipm.tensors.map_units`): tensors that make or scale
the units (a layer's output rows, its bias, norm parameters) keep the chosen units' slices; tensors
that consume them (the next layer's input columns) get either the same selection
(``magnitude``, ``activation``) or, with ``fold``, a least-squares fold of the removed units
into the kept ones: with ``G = E[z z^T]`` the second moments of the group's units at their
representative site, each unit is predicted from the kept ones by ``z ~ M z_K``,
``M = G[:, K] G[K, K]^-1``, and the consumers' columns become ``W M``, which is the best
linear correction of every consumer at once (Neuron Merging, ZipIt's within-model merge, with
one exact least-squares fold instead of pairwise matches). A removed unit that duplicates a
kept one up to scale is folded into it exactly.

Given calibration data, groups are pruned one after another and each fold predicts the
original model's units from the partly pruned model's kept units (``M = E[z z'_K^T]
E[z'_K z'_K^T]^-1``), so a later group also corrects what earlier ones changed: the layer-wise
reconstruction of channel-pruning methods, driven by the symmetry graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import method_of, plugin_table
from cipm.pruning.choose import second_moment, top, warn_if_few
from cipm.pruning.fold import GroupPlan, fold_plan, pruned_state, selection_plan
from cipm.pruning.problem import PruneConfig, PruneMethod, PruneProblem, prune_problem
from cipm.pruning.result import Pruned
from cipm.pruning.sequential import fold_in_order
from cipm.pruning.verify import Checker, coupled, reported, searched
from cipm.statistics.group import Statistics
from cipm.tensors.resize import with_tensors

__all__ = ["prune", "prune_methods", "prune_plan"]


def prune(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: str | PruneMethod = "fold",
    data: Iterable[Any] | None = None,
    config: PruneConfig | None = None,
) -> Pruned:
    """A smaller copy of `model`: groups lose units, layers shrink, same class.

    Args:
        model: the model the statistics (or graph) were made from; it is not changed.
        stats: `cipm.collect` statistics of `model`, or its symmetry graph (enough for
            ``magnitude``, and for ``fold`` given `data`).
        ratio: fraction of units to remove from every group of one of ``config.kinds``, in
            [0, 1).
        sizes: units to keep per group name; these override `ratio` for the groups named
            (the residual stream included).
        method: a name from `prune_methods()`, or a `PruneMethod`. Built in: ``"fold"``
            (keep the units that explain the others best and fold the rest into them by
            least squares), ``"magnitude"`` (keep the largest weight-path norms
            ||in|| * ||out||), ``"activation"`` (keep the largest RMS activation times
            outgoing norm) and ``"learned"`` (keep the units the pretrained meta-analysis
            network ranks highest and fold the rest into them; another network:
            ``method=meta.prune_method()``).
        data: calibration batches for folding methods: groups are then pruned one at a time
            in graph order, each folded so that its consumers see the *original* model's
            activations as closely as the already-pruned model allows (cross-model least
            squares), which keeps the errors of successive groups from compounding. Without
            it, every group is folded at once from `stats`.
        config: kinds a ratio prunes, how batches become inputs, the example inputs the
            result is checked on, progress (`PruneConfig`). A group whose new size the
            model's own code cannot follow (a module keeps a size no ``cipm_resized`` plugin
            updates) makes the pruned model fail on the example inputs; such a group is
            kept whole, named in a `CipmWarning` and in the report (which module failed,
            and why), so the result always runs and gives outputs of the original's shapes.

    Returns:
        `Pruned`: ``.model``, a new model of the same class, physically smaller (with
        nothing removed, equal to `model`), and ``.report``, what was pruned and kept whole
        (``cipm.export(result.model, path, policy=result.report)`` stores it).

    Raises:
        CipmError: a ratio outside [0, 1), an unknown or fixed group, a size that would leave
            a group empty or exceeds it, an unknown method, a method needing statistics
            without them, or statistics made from another model.
    """
    config = PruneConfig() if config is None else config
    problem = prune_problem(model, stats, ratio, sizes, data, config)
    chosen = _method(problem, method)
    traced = config.example_inputs is None
    examples = problem.graph.example_inputs if traced else config.example_inputs
    checker = Checker(model, examples, bool(problem.graph.outputs), traced=traced)
    keep = _kept(problem, chosen)
    if chosen.fold and data is not None:
        pruned, units, whole = fold_in_order(problem, checker, keep)
    else:
        plans = _plans(problem, chosen, keep)
        graph = problem.graph

        def build(names: Sequence[str]) -> torch.nn.Module:
            state = pruned_state(problem.tensors, graph, {n: plans[n] for n in names})
            return with_tensors(model, state, graph.blocked_plugins)

        pruned, done, whole = searched(build, coupled(graph, list(problem.targets)), checker)
        units = {g: plans[g].keep for g in done}
    sizes_done = {g: (problem.graph[g].size, problem.targets[g]) for g in units}
    return reported(pruned, sizes_done, units, whole, checker)


def prune_plan(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: str | PruneMethod = "fold",
    config: PruneConfig | None = None,
) -> dict[str, GroupPlan]:
    """What `prune` would do without `data`, per group that loses units (see `prune`)."""
    problem = prune_problem(model, stats, ratio, sizes, None, config or PruneConfig())
    chosen = _method(problem, method)
    return _plans(problem, chosen, _kept(problem, chosen))


def prune_methods(blocked_plugins: Iterable[str] = ()) -> dict[str, PruneMethod]:
    """The pruning methods the plugins provide, by name."""
    return plugin_table(
        "cipm_prune_methods",
        "prune method",
        blocked_plugins,
        check=lambda m: isinstance(m, PruneMethod),
    )


def _method(problem: PruneProblem, method: str | PruneMethod) -> PruneMethod:
    """The method named, once it is known to have what it needs."""
    chosen: PruneMethod = method_of(
        "cipm_prune_methods", "prune method", method, problem.graph.blocked_plugins, PruneMethod
    )
    if problem.stats is None:
        name = method if isinstance(method, str) else "the given method"
        if chosen.needs_statistics:
            problem.statistics(name)  # raises: says to pass them
        if chosen.fold and problem.data is None:
            raise CipmError(
                f"prune method '{name}' needs statistics (cipm.collect(model, graph, data)) "
                "or data=... for its least-squares fold"
            )
    return chosen


def _kept(problem: PruneProblem, method: PruneMethod) -> dict[str, torch.Tensor] | None:
    """The units each target group keeps, where the method scores them (else None: the
    fold chooses)."""
    if method.scores is None:
        return None
    scores = method.scores(problem)
    for name in problem.targets:
        got = scores.get(name) if isinstance(scores, Mapping) else None
        size = problem.graph[name].size
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (size,):
            raise CipmError(
                f"the prune method's scores must give group '{name}' one score per unit "
                f"({size}), got {got if got is None else getattr(got, 'shape', type(got))}"
            )
    return {name: top(scores[name], k) for name, k in problem.targets.items()}


def _plans(
    problem: PruneProblem, method: PruneMethod, keep: Mapping[str, torch.Tensor] | None
) -> dict[str, GroupPlan]:
    """Each target group's plan from the statistics: the kept units' slices, and the fold of
    the rest into them where the method folds."""
    plans: dict[str, GroupPlan] = {}
    for name, k in problem.targets.items():
        chosen = None if keep is None else keep[name]
        if not method.fold:
            assert chosen is not None  # PruneMethod: a method that does not fold scores
            plans[name] = selection_plan(chosen)
            continue
        s = problem.statistics("fold")[name]
        warn_if_few(s.count, k, name)
        second = second_moment(s.moments)
        plans[name] = fold_plan(second, second, s.features.out_norm, k, s.count, chosen)
    return plans
