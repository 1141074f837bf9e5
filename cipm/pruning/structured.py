"""`cipm.prune`: structured pruning through the symmetry graph, into a physically smaller model.

Pruning a group keeps k of its n units. Every member tensor of the group is mapped through a
(k, n) matrix along the group's axis (`cipm.tensors.map_units`): tensors that make or scale
the units (a layer's output rows, its bias, norm parameters) keep the chosen units' slices; tensors
that consume them (the next layer's input columns) get either the same selection
(``magnitude``, ``activation``) or, with ``merge``, a least-squares fold of the removed units
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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from cipm.batches import model_inputs
from cipm.errors import CipmError
from cipm.graph.symmetry import GroupKind, SymmetryGraph
from cipm.pruning.choose import magnitude, second_moment, top, warn_if_few
from cipm.pruning.fold import GroupPlan, merge_plan, pruned_state, selection_plan
from cipm.pruning.sequential import merge_in_order
from cipm.pruning.targets import PRUNABLE, kinds_of, targets
from cipm.pruning.verify import Checker, coupled, reported, searched
from cipm.statistics.group import Statistics
from cipm.tensors.modify import fitted_tensors
from cipm.tensors.resize import with_tensors

if TYPE_CHECKING:
    from cipm.meta.analyzer import MetaAnalyzer

__all__ = ["METHODS", "PRUNABLE", "GroupPlan", "Method", "prune", "prune_plan", "pruned_state"]

Method = Literal["merge", "magnitude", "activation", "learned"]
METHODS: tuple[str, ...] = get_args(Method)


def prune(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: Method = "merge",
    kinds: tuple[GroupKind | str, ...] = PRUNABLE,
    data: Iterable[Any] | None = None,
    inputs: Callable[[Any], Any] = model_inputs,
    example_inputs: Any = None,
    progress: bool = True,
    meta: MetaAnalyzer | None = None,
) -> torch.nn.Module:
    """A smaller copy of `model`: groups lose units, layers shrink, same class.

    Args:
        model: the model the statistics (or graph) were made from; it is not changed.
        stats: `cipm.collect` statistics of `model`, or its symmetry graph (enough for
            ``magnitude``, and for ``merge`` given `data`).
        ratio: fraction of units to remove from every group of one of `kinds`, in [0, 1).
        sizes: units to keep per group name; these override `ratio` for the groups named
            (the residual stream included).
        method: ``"merge"`` (keep the units that explain the others best and fold the rest
            into them by least squares), ``"magnitude"`` (keep the largest weight-path norms
            ||in|| * ||out||), ``"activation"`` (keep the largest RMS activation times
            outgoing norm) or ``"learned"`` (keep the units the meta-analysis network `meta`
            ranks highest, default `cipm.MetaAnalyzer.pretrained()`, and fold the rest into
            them as ``merge`` does).
        kinds: group kinds `ratio` applies to (default hidden units, channels, heads).
        data: calibration batches for ``merge``: groups are then pruned one at a time in
            graph order, each folded so that its consumers see the *original* model's
            activations as closely as the already-pruned model allows (cross-model least
            squares), which keeps the errors of successive groups from compounding. Without
            it, every group is folded at once from `stats`.
        inputs: maps a batch of `data` to model inputs (as in `cipm.collect`).
        example_inputs: inputs to check the pruned model on (default: those the graph was
            traced on). A group whose new size the model's own code cannot follow (a module
            keeps a size no ``cipm_resized`` plugin updates) makes the pruned model fail
            there; such a group is kept whole, named in a `CipmWarning` and in
            `cipm.pruning_report` (which module failed, and why), so the result always runs
            and gives outputs of the original's shapes.
        progress: a progress bar over the groups when pruning with `data`.
        meta: the meta-analysis network for ``"learned"``.

    Returns:
        A new model of the same class, physically smaller; with nothing removed, equal to
        `model`. ``cipm.pruning_report(result)`` says what was pruned and kept whole.

    Raises:
        CipmError: a ratio outside [0, 1), an unknown or fixed group, a size that would leave
            a group empty or exceeds it, a method needing statistics without them, or
            statistics made from another model.
    """
    graph, tensors, kept = _checked(
        model, stats, ratio, sizes, method, kinds, data=data is not None
    )
    traced = example_inputs is None
    examples = graph.example_inputs if traced else example_inputs
    checker = Checker(model, examples, bool(graph.outputs), traced=traced)
    chosen = _learned_keep(model, stats, kept, meta) if method == "learned" else None
    if method in ("merge", "learned") and data is not None:
        pruned, units, whole = merge_in_order(
            model, graph, kept, data, inputs, progress, checker, chosen
        )
    else:
        plans = _plans(tensors, stats, graph, kept, method, chosen)

        def build(names: Sequence[str]) -> torch.nn.Module:
            state = pruned_state(tensors, graph, {n: plans[n] for n in names})
            return with_tensors(model, state, graph.blocked_plugins)

        pruned, done, whole = searched(build, coupled(graph, list(kept)), checker)
        units = {g: plans[g].keep for g in done}
    sizes_done = {g: (graph[g].size, kept[g]) for g in units}
    return reported(pruned, sizes_done, units, whole, checker)


def prune_plan(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: Method = "merge",
    kinds: tuple[GroupKind | str, ...] = PRUNABLE,
    meta: MetaAnalyzer | None = None,
) -> dict[str, GroupPlan]:
    """What `prune` would do without `data`, per group that loses units (see `prune`)."""
    graph, tensors, kept = _checked(model, stats, ratio, sizes, method, kinds, data=False)
    chosen = _learned_keep(model, stats, kept, meta) if method == "learned" else None
    return _plans(tensors, stats, graph, kept, method, chosen)


def _learned_keep(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    kept: Mapping[str, int],
    meta: MetaAnalyzer | None,
) -> dict[str, torch.Tensor]:
    """The units the meta-analysis network ranks highest, per group to prune."""
    from cipm.ordering.canonical import learned

    assert isinstance(stats, Statistics)  # _checked: "learned" needs them
    scores = learned(meta).scores(model, stats)
    return {name: top(scores[name], k) for name, k in kept.items()}


def _plans(
    tensors: Mapping[str, torch.Tensor],
    stats: Statistics | SymmetryGraph,
    graph: SymmetryGraph,
    kept: Mapping[str, int],
    method: str,
    chosen: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, GroupPlan]:
    """Each target group's plan, chosen from the weights (magnitude), the statistics, or
    the kept units `chosen` (learned; folded as merge)."""
    plans: dict[str, GroupPlan] = {}
    for name, k in kept.items():
        group = graph[name]
        if method == "magnitude":
            plans[name] = selection_plan(top(magnitude(tensors, graph, group), k))
            continue
        assert isinstance(stats, Statistics)  # _checked: the other methods need them
        second = second_moment(stats[name].moments)
        out_norm = stats[name].features.out_norm
        if method in ("merge", "learned"):
            warn_if_few(stats[name].count, k, name)
            keep = None if chosen is None else chosen[name]
            plans[name] = merge_plan(second, second, out_norm, k, stats[name].count, keep)
        else:
            plans[name] = selection_plan(top(second.diagonal().sqrt() * out_norm, k))
    return plans


def _checked(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    ratio: float | None,
    sizes: Mapping[str, int] | None,
    method: str,
    kinds: tuple[GroupKind | str, ...],
    *,
    data: bool,
) -> tuple[SymmetryGraph, dict[str, torch.Tensor], dict[str, int]]:
    """The graph, the model's tensors and the units to keep per group, once the request is
    known to be sound."""
    if method not in METHODS:
        raise CipmError(f"method must be one of {METHODS}, not {method!r}")
    if isinstance(stats, Statistics):
        tensors = stats.check_model(model)
        graph = stats.graph
    elif isinstance(stats, SymmetryGraph):
        graph = stats
        tensors = fitted_tensors(model, graph)
        if method in ("activation", "learned") or (method == "merge" and not data):
            raise CipmError(
                f"method '{method}' needs statistics (cipm.collect(model, graph, data))"
                + (" or data=..." if method == "merge" else "")
            )
    else:
        raise CipmError(f"prune needs statistics or a symmetry graph, got {type(stats).__name__}")
    kept = targets(graph, ratio, {} if sizes is None else sizes, kinds_of(kinds))
    return graph, tensors, kept
