"""`cipm.prune`: structured pruning through the symmetry graph, into a physically smaller model.

Pruning a group keeps k of its n units. Every member tensor of the group is mapped through a
(k, n) matrix along the group's axis (`cipm.units.map_units`): tensors that make or scale the
units (a layer's output rows, its bias, norm parameters) keep the chosen units' slices; tensors
that consume them (the next layer's input columns) get either the same selection
(``magnitude``, ``activation``) or, with ``merge``, a least-squares fold of the removed units
into the kept ones: with ``G = E[z z^T]`` the second moments of the group's units at their
representative site, each unit is predicted from the kept ones by ``z ~ M z_K``,
``M = G[:, K] G[K, K]^-1``, and the consumers' columns become ``W M``, which is the best
linear correction of every consumer at once (Neuron Merging, ZipIt's within-model merge, with
one exact least-squares fold instead of pairwise matches). A removed unit that duplicates a
kept one up to scale is folded into it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from cipm.errors import CipmError
from cipm.graph import GroupKind, PermGroup, SymmetryGraph
from cipm.modify import fitted_tensors
from cipm.resize import with_tensors
from cipm.statistics import Statistics
from cipm.units import map_units, unit_matrix

__all__ = ["PRUNABLE", "Method", "prune", "prune_plan"]

Method = Literal["merge", "magnitude", "activation"]
METHODS = ("merge", "magnitude", "activation")
# kinds a global ratio prunes by default; the residual stream is pruned when named
PRUNABLE = (GroupKind.HIDDEN, GroupKind.CHANNELS, GroupKind.HEADS)


@dataclass(frozen=True)
class GroupPlan:
    """How one group is pruned: the kept units (in their original order) and the (k, n)
    maps for the tensors that make the units and for those that consume them."""

    keep: torch.Tensor
    produce: torch.Tensor
    consume: torch.Tensor


def prune(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: Method = "merge",
    kinds: tuple[GroupKind | str, ...] = PRUNABLE,
    example_inputs: Any = None,
) -> torch.nn.Module:
    """A smaller copy of `model`: groups lose units, layers shrink, same class.

    Args:
        model: the model the statistics (or graph) were made from; it is not changed.
        stats: `cipm.collect` statistics (needed by ``merge`` and ``activation``), or just
            the symmetry graph for ``magnitude``.
        ratio: fraction of units to remove from every group of one of `kinds`, in [0, 1).
        sizes: units to keep per group name; these override `ratio` for the groups named
            (any kind but within-head, the residual stream included).
        method: ``"merge"`` (keep the units that explain the others best and fold the rest
            into them by least squares), ``"magnitude"`` (keep the largest weight-path norms
            ||in|| * ||out||) or ``"activation"`` (keep the largest RMS activation times
            outgoing norm).
        kinds: group kinds `ratio` applies to (default hidden units, channels, heads).
        example_inputs: if given, the pruned model is run on them, and a failure (a module
            whose size attributes no plugin updated) raises a CipmError naming it.

    Returns:
        A new model of the same class, physically smaller; with nothing removed, equal to
        `model`.

    Raises:
        CipmError: a ratio outside [0, 1), an unknown or fixed group, a size that would leave
            a group empty or exceeds it, a method needing statistics without them, or
            statistics made from another model.
    """
    graph = stats.graph if isinstance(stats, Statistics) else stats
    plans = prune_plan(model, stats, ratio=ratio, sizes=sizes, method=method, kinds=kinds)
    pruned = with_tensors(model, pruned_state(fitted_tensors(model, graph), graph, plans))
    if example_inputs is not None:
        _check_runs(pruned, example_inputs)
    return pruned


def prune_plan(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    *,
    ratio: float | None = None,
    sizes: Mapping[str, int] | None = None,
    method: Method = "merge",
    kinds: tuple[GroupKind | str, ...] = PRUNABLE,
) -> dict[str, GroupPlan]:
    """What `prune` would do, per group that loses units (see `prune` for the arguments)."""
    graph = stats.graph if isinstance(stats, Statistics) else stats
    if method not in METHODS:
        raise CipmError(f"method must be one of {METHODS}, not {method!r}")
    tensors = fitted_tensors(model, graph)
    if isinstance(stats, Statistics):
        stats.check_model(model)
    elif method != "magnitude":
        raise CipmError(f"method '{method}' needs statistics: cipm.collect(model, graph, data)")
    targets = _targets(graph, ratio, sizes or {}, tuple(GroupKind(k) for k in kinds))
    plans: dict[str, GroupPlan] = {}
    for name, k in targets.items():
        group = graph[name]
        if method == "magnitude":
            keep = _top(_magnitude(tensors, graph, group), k)
        elif method == "activation":
            assert isinstance(stats, Statistics)
            s = stats[name]
            keep = _top(_second_moment(stats, name).diagonal().sqrt() * s.features.out_norm, k)
        else:
            assert isinstance(stats, Statistics)
            plans[name] = _merge_plan(_second_moment(stats, name), stats[name].features.out_norm, k)
            continue
        select = torch.eye(group.size, dtype=torch.float64)[keep]
        plans[name] = GroupPlan(keep, select, select)
    return plans


def pruned_state(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, plans: Mapping[str, GroupPlan]
) -> dict[str, torch.Tensor]:
    """The tensors the plans touch, each mapped along every pruned group's axis."""
    consumes = {(m.key, m.dim): m.consumes for g in graph for m in g.members}
    out: dict[str, torch.Tensor] = {}
    for axis in graph.axes:
        pruned = [g for g in dict.fromkeys(axis.groups()) if g in plans]
        if not pruned:
            continue
        side = "consume" if consumes.get((axis.key, axis.dim), False) else "produce"
        maps = {g: getattr(plans[g], side) for g in pruned}
        t = out.get(axis.key, tensors[axis.key])
        out[axis.key] = map_units(t.to(torch.float64), axis.dim, axis.layout, maps).to(t.dtype)
    return out


# -- choosing units ----------------------------------------------------------------------------


def _targets(
    graph: SymmetryGraph,
    ratio: float | None,
    sizes: Mapping[str, int],
    kinds: tuple[GroupKind, ...],
) -> dict[str, int]:
    """Units to keep per group that loses any."""
    if ratio is None and not sizes:
        raise CipmError("say how much to prune: ratio=... (a fraction) or sizes={group: units}")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise CipmError(f"ratio must be in [0, 1), got {ratio}")
    names = {g.name for g in graph}
    targets: dict[str, int] = {}
    if ratio is not None:
        for g in graph:
            if g.kind in kinds and g.kind != GroupKind.WITHIN_HEAD:
                targets[g.name] = max(1, round(g.size * (1.0 - ratio)))
    for name, k in sizes.items():
        if name not in names:
            raise CipmError(
                f"'{name}' is not a permutation group of {graph.model}: its axes are fixed "
                f"(model inputs/outputs) or it does not exist; groups are {sorted(names)}"
            )
        group = graph[name]
        if group.kind == GroupKind.WITHIN_HEAD:
            raise CipmError(
                f"group '{name}' holds dims within attention heads; pruning them would change "
                "the attention scale. Prune whole heads (its group "
                f"'{group.within}') instead"
            )
        if not 1 <= int(k) <= group.size:
            raise CipmError(
                f"cannot keep {k} units of group '{name}' ({group.size} units): "
                + ("that would leave it empty" if int(k) < 1 else "it has fewer")
            )
        targets[name] = int(k)
    return {n: k for n, k in targets.items() if k < graph[n].size}


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order (ties: lower index)."""
    order = torch.sort(score, descending=True, stable=True).indices
    return order[:k].sort().values


def _magnitude(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, group: PermGroup
) -> torch.Tensor:
    """||in|| * ||out|| per unit over all member tensors (making side, consuming side)."""
    made = torch.zeros(group.size, dtype=torch.float64)
    used = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        cols = unit_matrix(tensors[m.key], m.dim, graph.layout(m.key, m.dim), group.name)
        sq = cols.to(torch.float64).square().sum(0)
        if m.consumes:
            used += sq
        else:
            made += sq
    return made.sqrt() * (used.sqrt() if bool(used.any()) else 1.0)


def _second_moment(stats: Statistics, name: str) -> torch.Tensor:
    """E[z z^T] of a group's units at their site (uncentered: a consumer sees the means too)."""
    m = stats[name].moments
    return m.comoment / m.count + torch.outer(m.mean, m.mean)


def _merge_plan(second: torch.Tensor, out_norm: torch.Tensor, k: int) -> GroupPlan:
    """Greedy least-squares subset (pivoted Cholesky of the consumer-weighted second moments:
    keep, one at a time, the unit whose part not explained by the kept ones reaches the
    consumers most strongly), then the least-squares fold of every unit into the kept ones."""
    n = second.shape[0]
    weight = torch.where(out_norm > 0, out_norm, torch.ones_like(out_norm))
    g = second * torch.outer(weight, weight)
    residual = g.diagonal().clone()
    factors = torch.zeros(n, k, dtype=torch.float64)
    chosen: list[int] = []
    for j in range(k):
        scores = residual.clone()
        scores[chosen] = -1.0
        i = int(torch.argmax(scores))
        chosen.append(i)
        pivot = float(residual[i])
        if pivot <= 1e-12 * float(g.diagonal().max()):  # the rest is explained: any order
            column = torch.zeros(n, dtype=torch.float64)
        else:
            column = (g[:, i] - factors[:, :j] @ factors[i, :j]) / pivot**0.5
        factors[:, j] = column
        residual = (residual - column.square()).clamp_min(0.0)
    keep = torch.tensor(sorted(chosen))
    kk = second[keep][:, keep]
    ridge = 1e-8 * float(kk.diagonal().mean()) + 1e-30
    fold = torch.linalg.solve(kk + ridge * torch.eye(k, dtype=torch.float64), second[keep]).T
    fold[keep] = torch.eye(k, dtype=torch.float64)  # kept units stay themselves exactly
    return GroupPlan(keep, torch.eye(n, dtype=torch.float64)[keep], fold.T.contiguous())


# -- checks ------------------------------------------------------------------------------------


def _check_runs(model: torch.nn.Module, example_inputs: Any) -> None:
    from cipm._export import as_args

    args, kwargs = as_args(example_inputs)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as e:
        raise CipmError(
            f"the pruned {type(model).__name__} does not run: {e}. A module records a size "
            "that no plugin updated; add a cipm_resized hook for it (docs/plugins.md)"
        ) from e
