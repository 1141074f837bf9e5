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

Given calibration data, groups are pruned one after another and each fold predicts the
original model's units from the partly pruned model's kept units (``M = E[z z'_K^T]
E[z'_K z'_K^T]^-1``), so a later group also corrects what earlier ones changed: the layer-wise
reconstruction of channel-pruning methods, driven by the symmetry graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from cipm.errors import CipmError, CipmWarning
from cipm.graph.symmetry import GroupKind, PermGroup, SymmetryGraph
from cipm.statistics.capture import SiteRecorder, representative_site
from cipm.statistics.collection import model_inputs
from cipm.statistics.group import Statistics, unit_features
from cipm.statistics.moments import CrossAccumulator, MomentAccumulator, Moments
from cipm.tensors.modify import fitted_tensors
from cipm.tensors.resize import with_tensors
from cipm.tensors.units import map_units, unit_matrix

__all__ = ["PRUNABLE", "GroupPlan", "Method", "prune", "prune_plan", "pruned_state"]

Method = Literal["merge", "magnitude", "activation"]
METHODS = ("merge", "magnitude", "activation")
# kinds a global ratio prunes by default; the residual stream is pruned when named
PRUNABLE = (GroupKind.HIDDEN, GroupKind.CHANNELS, GroupKind.HEADS)
# ridge of the least-squares fold, relative to the kept units' mean second moment: next to
# nothing when the samples determine the fold, a shrinkage when they don't (fewer than 2k)
RIDGE, RIDGE_FEW_SAMPLES = 1e-12, 1e-2


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
    data: Iterable[Any] | None = None,
    inputs: Callable[[Any], Any] = model_inputs,
    example_inputs: Any = None,
    progress: bool = True,
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
            ||in|| * ||out||) or ``"activation"`` (keep the largest RMS activation times
            outgoing norm).
        kinds: group kinds `ratio` applies to (default hidden units, channels, heads).
        data: calibration batches for ``merge``: groups are then pruned one at a time in
            graph order, each folded so that its consumers see the *original* model's
            activations as closely as the already-pruned model allows (cross-model least
            squares), which keeps the errors of successive groups from compounding. Without
            it, every group is folded at once from `stats`.
        inputs: maps a batch of `data` to model inputs (as in `cipm.collect`).
        example_inputs: if given, the pruned model is run on them, and a failure (a module
            whose size attributes no plugin updated) raises a CipmError naming it.
        progress: a progress bar over the groups when pruning with `data`.

    Returns:
        A new model of the same class, physically smaller; with nothing removed, equal to
        `model`.

    Raises:
        CipmError: a ratio outside [0, 1), an unknown or fixed group, a size that would leave
            a group empty or exceeds it, a method needing statistics without them, or
            statistics made from another model.
    """
    graph, targets = _checked(model, stats, ratio, sizes, method, kinds, data=data is not None)
    if method == "merge" and data is not None:
        pruned = _merge_in_order(model, graph, targets, data, inputs, progress)
    else:
        tensors = fitted_tensors(model, graph)
        plans = _plans(tensors, stats, graph, targets, method)
        pruned = with_tensors(model, pruned_state(tensors, graph, plans))
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
    """What `prune` would do without `data`, per group that loses units (see `prune`)."""
    graph, targets = _checked(model, stats, ratio, sizes, method, kinds, data=False)
    return _plans(fitted_tensors(model, graph), stats, graph, targets, method)


def _plans(
    tensors: Mapping[str, torch.Tensor],
    stats: Statistics | SymmetryGraph,
    graph: SymmetryGraph,
    targets: Mapping[str, int],
    method: str,
) -> dict[str, GroupPlan]:
    """Each target group's plan, chosen from the weights (magnitude) or the statistics."""
    plans: dict[str, GroupPlan] = {}
    for name, k in targets.items():
        group = graph[name]
        if method == "magnitude":
            keep = _top(_magnitude(tensors, graph, group), k)
        else:
            assert isinstance(stats, Statistics)
            second = _second_moment(stats[name].moments)
            out_norm = stats[name].features.out_norm
            if method == "merge":
                _warn_if_few(stats[name].count, k, name)
                plans[name] = _merge_plan(second, second, out_norm, k, stats[name].count)
                continue
            keep = _top(second.diagonal().sqrt() * out_norm, k)
        select = torch.eye(group.size, dtype=torch.float64)[keep]
        plans[name] = GroupPlan(keep, select, select)
    return plans


def _merge_in_order(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    targets: Mapping[str, int],
    data: Iterable[Any],
    inputs: Callable[[Any], Any],
    progress: bool,
) -> torch.nn.Module:
    """Prune group after group; each is folded on cross-moments between the original
    model's units and the partly pruned model's (see `prune`'s `data`)."""
    # a loader is read once per group; a one-shot iterator is kept in memory for that
    batches = list(data) if iter(data) is data else data
    first = next(iter(batches), None)
    if first is None:
        raise CipmError("prune got no batches in data; it needs at least one")
    original = SiteRecorder(model, graph, {n: representative_site(graph[n]) for n in targets})
    current: torch.nn.Module = model
    done: dict[str, int] = {}
    for name, k in tqdm(targets.items(), desc="prune", disable=not progress, leave=False):
        now = graph.resized(done)
        recorder = _recorder(current, now, name, inputs(first))
        own, cross = _fold_moments(original, recorder, name, batches, inputs)
        tensors = fitted_tensors(current, now)
        out_norm = unit_features(tensors, now, now[name]).out_norm
        _warn_if_few(own.count, k, name)
        second = _second_moment(own)
        plan = _merge_plan(second, second if cross is None else cross, out_norm, k, own.count)
        current = with_tensors(current, pruned_state(tensors, now, {name: plan}))
        done[name] = k
    return current


def _recorder(
    model: torch.nn.Module, graph: SymmetryGraph, name: str, example: Any
) -> SiteRecorder:
    """A recorder of one group's units in a partly pruned model. Its graph is the original
    one resized; where pruning changed the exported graph itself (LLaMA skips repeating
    keys and values once a key/value head serves one query head), the model is traced anew
    and the group found there by its members (names may shift when a group disappears)."""
    recorder = SiteRecorder(model, graph, {name: representative_site(graph[name])})  # the only site
    try:
        recorder.check(example)
        return recorder
    except CipmError:
        from cipm.discovery.tracer import trace

        retraced = trace(model, example, outputs="free" if graph.outputs else "fixed")
        places = {(m.key, m.dim, m.unit) for m in graph[name].members}
        same = [g for g in retraced if {(m.key, m.dim, m.unit) for m in g.members} == places]
        if not same:
            raise CipmError(
                f"group '{name}' is no longer found in the partly pruned "
                f"{type(model).__name__}; prune it without data= (from statistics)"
            ) from None
        return SiteRecorder(model, retraced, {same[0].name: representative_site(same[0])})


def _fold_moments(
    original: SiteRecorder,
    current: SiteRecorder,
    name: str,
    batches: Iterable[Any],
    inputs: Callable[[Any], Any],
) -> tuple[Moments, torch.Tensor | None]:
    """Moments of the group's units in the partly pruned model and E[z z'^T] against the
    original's. Where the site's samples span a group already pruned (query heads of a
    key/value head that lost some), the two models' samples don't pair up: then the group
    is folded on the pruned model's own moments (cross is None)."""
    cross = CrossAccumulator(grams=(False, True))  # the original's own gram is not needed
    alone = MomentAccumulator()
    for i, batch in enumerate(batches):
        x = inputs(batch)
        (z_now,) = current.run(x, i).values()
        z_then = None if alone.count else original.run(x, i, [name])[name]
        if z_then is not None and z_then.shape == z_now.shape:
            cross.add(z_then, z_now)
        elif not cross.a.count:
            alone.add(z_now)
        else:
            raise CipmError(f"batch {i} gives group '{name}' samples unlike the first batch's")
    if alone.count:
        return alone.moments(), None
    m = cross.moments()
    return m.b, m.cross / m.a.count + torch.outer(m.a.mean, m.b.mean)


def _checked(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    ratio: float | None,
    sizes: Mapping[str, int] | None,
    method: str,
    kinds: tuple[GroupKind | str, ...],
    *,
    data: bool,
) -> tuple[SymmetryGraph, dict[str, int]]:
    """The graph and the units to keep per group, once the request is known to be sound."""
    if method not in METHODS:
        raise CipmError(f"method must be one of {METHODS}, not {method!r}")
    if isinstance(stats, Statistics):
        stats.check_model(model)
        graph = stats.graph
    elif isinstance(stats, SymmetryGraph):
        graph = stats
        fitted_tensors(model, graph)
        if method == "activation" or (method == "merge" and not data):
            raise CipmError(
                f"method '{method}' needs statistics (cipm.collect(model, graph, data))"
                + (" or data=..." if method == "merge" else "")
            )
    else:
        raise CipmError(f"prune needs statistics or a symmetry graph, got {type(stats).__name__}")
    return graph, _targets(graph, ratio, sizes or {}, tuple(GroupKind(k) for k in kinds))


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
            if g.kind in kinds and _prunable(graph, g) is None:
                targets[g.name] = max(1, round(g.size * (1.0 - ratio)))
    for name, k in sizes.items():
        if name not in names:
            raise CipmError(
                f"'{name}' is not a permutation group of {graph.model}: its axes are fixed "
                f"(model inputs/outputs) or it does not exist; groups are {sorted(names)}"
            )
        group = graph[name]
        why = _prunable(graph, group)
        if why is not None:
            raise CipmError(f"group '{name}' cannot be pruned: {why}")
        if not 1 <= int(k) <= group.size:
            raise CipmError(
                f"cannot keep {k} units of group '{name}' ({group.size} units): "
                + ("that would leave it empty" if int(k) < 1 else "it has fewer")
            )
        targets[name] = int(k)
    return {n: k for n, k in targets.items() if k < graph[n].size}


def _prunable(graph: SymmetryGraph, group: PermGroup) -> str | None:
    """Why a group can't lose units, or None if it can."""
    if group.kind == GroupKind.WITHIN_HEAD:
        return (
            "it holds dims within attention heads, and pruning them would change the attention "
            f"scale; prune whole heads (group '{group.within}') instead"
        )
    inner = [g.name for g in graph if g.within == group.name]
    if inner and group.kind != GroupKind.HEADS:
        return (
            f"its units are blocks of the units of '{inner[0]}' (such as GroupNorm groups), "
            "whose count the layer records; prune the units within the blocks instead"
        )
    return None


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


def _second_moment(m: Moments) -> torch.Tensor:
    """E[z z^T] of units (uncentered: a consumer sees the means too)."""
    return m.comoment / m.count + torch.outer(m.mean, m.mean)


def _merge_plan(
    own: torch.Tensor, target: torch.Tensor, out_norm: torch.Tensor, k: int, samples: int
) -> GroupPlan:
    """Keep the k units that explain the others best (`_explaining`), then fold: consumers
    get ``M = target[:, K] (own[K, K] + ridge)^-1``, the least-squares prediction of the
    target units (E[z z'^T], z the original's, z' the model being pruned) from the kept
    ones. When target is own (one-shot), kept units stay exactly themselves."""
    n = own.shape[0]
    keep = _explaining(own, out_norm, k)
    kk = own[keep][:, keep]
    relative = RIDGE if samples >= 2 * k else RIDGE_FEW_SAMPLES
    ridge = relative * float(kk.diagonal().mean()) + 1e-300
    eye = torch.eye(k, dtype=torch.float64)
    fold = torch.linalg.solve(kk + ridge * eye, target[:, keep].T).T  # (n, k)
    if target is own:
        fold[keep] = eye
    return GroupPlan(keep, torch.eye(n, dtype=torch.float64)[keep], fold.T.contiguous())


def _explaining(second: torch.Tensor, out_norm: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy least-squares subset: a pivoted Cholesky of the second moments weighted by
    the units' outgoing norms keeps, one at a time, the unit whose part not explained by the
    kept ones reaches the consumers most strongly. Once the rest is explained (fewer
    samples than units), the remaining picks go by weighted energy."""
    n = second.shape[0]
    weight = torch.where(out_norm > 0, out_norm, torch.ones_like(out_norm))
    g = second * torch.outer(weight, weight)
    energy = g.diagonal().clone()
    residual = energy.clone()
    factors = torch.zeros(n, k, dtype=torch.float64)
    chosen = torch.zeros(n, dtype=torch.bool)
    tiny = 1e-10 * float(energy.max().clamp_min(1e-300))
    for j in range(k):
        scores = torch.where(chosen, -1.0, residual)
        if float(scores.max()) <= tiny:  # explained: fill by energy
            scores = torch.where(chosen, -1.0, energy)
            rest = torch.sort(scores, descending=True, stable=True).indices[: k - j]
            chosen[rest] = True
            break
        i = int(torch.argmax(scores))
        chosen[i] = True
        column = (g[:, i] - factors[:, :j] @ factors[i, :j]) / float(residual[i]) ** 0.5
        factors[:, j] = column
        residual = (residual - column.square()).clamp_min(0.0)
    return torch.nonzero(chosen).flatten()


def _warn_if_few(samples: int, k: int, group: str) -> None:
    if samples < k:
        warnings.warn(
            f"group '{group}': {samples} samples for {k} kept units; the least-squares fold "
            "is underdetermined (ridge-regularized). Collect more data for a better merge.",
            CipmWarning,
            stacklevel=4,
        )


# -- checks ------------------------------------------------------------------------------------


def _check_runs(model: torch.nn.Module, example_inputs: Any) -> None:
    from cipm.discovery.export import as_args

    args, kwargs = as_args(example_inputs)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as e:
        raise CipmError(
            f"the pruned {type(model).__name__} does not run: {e}. A module records a size "
            "that no plugin updated; add a cipm_resized hook for it (docs/plugins.md)"
        ) from e
