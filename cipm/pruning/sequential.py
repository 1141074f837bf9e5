"""Pruning with calibration data: group after group, each folded so that its consumers see
the *original* model's units as closely as the partly pruned model allows (cross-model least
squares), which keeps the errors of successive groups from compounding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from cipm.batches import Inputs, check_loader
from cipm.discovery.tracer import trace
from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.choose import second_moment, warn_if_few
from cipm.pruning.fold import fold_plan, pruned_state
from cipm.pruning.problem import PruneProblem
from cipm.pruning.result import KeptWhole
from cipm.pruning.verify import Checker
from cipm.statistics.capture import SiteRecorder, representative_site
from cipm.statistics.collection import accumulate, accumulate_cross
from cipm.statistics.moments import Moments
from cipm.tensors.features import unit_features
from cipm.tensors.fitted import fitted_tensors
from cipm.tensors.resize import with_tensors

__all__ = ["fold_in_order"]


def fold_in_order(
    problem: PruneProblem, checker: Checker, chosen: Mapping[str, torch.Tensor] | None = None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[KeptWhole]]:
    """Prune group after group; each is folded on cross-moments between the original
    model's units and the partly pruned model's (see `cipm.prune`'s `data`); the units kept
    are those that explain the others best, or `chosen`'s for the groups it names. A group after
    which the `checker` finds the model broken is kept whole. Returns the model, the kept
    units of each group pruned, and the groups kept whole."""
    model, graph = problem.model, problem.graph
    inputs, progress = problem.config.inputs, problem.config.progress
    data = check_loader(problem.data, "prune")
    # a loader is read once per group; a one-shot iterator is kept in memory for that
    batches = list(data) if iter(data) is data else data
    first = next(iter(batches), None)
    if first is None:
        raise CipmError("prune got no batches in data; it needs at least one")
    original = SiteRecorder(
        model, graph, {n: representative_site(graph[n]) for n in problem.targets}
    )
    current: torch.nn.Module = model
    done: dict[str, torch.Tensor] = {}  # the kept units of each group pruned
    whole: list[KeptWhole] = []
    blocked = graph.blocked_plugins
    for name, k in tqdm(problem.targets.items(), desc="prune", disable=not progress, leave=False):
        now = graph.resized({g: len(units) for g, units in done.items()})
        recorder = _recorder(current, now, name, inputs(first))
        own, cross = _fold_moments(original, recorder, name, batches, inputs(first), inputs)
        tensors = fitted_tensors(current, now)
        out_norm = unit_features(tensors, now, now[name]).out_norm
        warn_if_few(own.count, k, name)
        second = second_moment(own)
        target = second if cross is None else cross
        keep = None if chosen is None else chosen.get(name)
        plan = fold_plan(second, target, out_norm, k, own.count, keep)
        state = pruned_state(tensors, now, {name: plan})
        candidate, failure = checker.built(partial(with_tensors, current, state, blocked))
        if failure is not None:
            whole.append(KeptWhole(name, *failure))
            continue
        assert candidate is not None  # built: a model whenever nothing failed
        current = candidate
        done[name] = plan.keep
    return (with_tensors(model, {}) if current is model else current), done, whole


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
        retraced = trace(
            model,
            example,
            outputs="free" if graph.outputs else "fixed",
            blocked_plugins=graph.blocked_plugins,
        )
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
    example: Any,
    inputs: Inputs,
) -> tuple[Moments, torch.Tensor | None]:
    """Moments of the group's units in the partly pruned model and E[z z'^T] against the
    original's. Where the site's samples span a group already pruned (query heads of a
    key/value head that lost some), the two models' samples don't pair up: then the group
    is folded on the pruned model's own moments (cross is None)."""
    (now_name,) = current.sites
    if original.block_shape(example, name) != current.block_shape(example, now_name):
        return accumulate(current, batches, inputs=inputs, what="prune")[now_name], None
    m = accumulate_cross(
        original,
        current,
        batches,
        inputs=inputs,
        pairs={name: now_name},
        grams=(False, True),  # the original's own gram is not needed
        what="prune",
    )[name]
    return m.b, m.cross / m.a.count + torch.outer(m.a.mean, m.b.mean)
