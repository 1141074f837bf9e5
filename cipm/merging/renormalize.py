"""REPAIR (Jordan et al., 2022): after averaging aligned models, rescale every unit's
pre-activation mean and standard deviation to the average of the endpoints' own.

Averaging two aligned networks shrinks the variance of their hidden units ("variance
collapse"), and later layers see activations of the wrong scale. For each group, in graph
order, the layer that makes its units gets an affine correction folded into its weight and
bias: the first activation of the group made by an op of role ``"affine"``
(`cipm_op_roles`) whose module names its weight and bias (`cipm_affine_parameters`: a
Linear or convolution with a bias, the normalization after one, any plugin's layer), both
members of the group that make its units. The symmetry graph says along which dim, and in
which layout, each holds them (GPT-2's ``Conv1D`` weight along dim 1). The merged model's
statistics are measured again after each correction, so later groups see earlier ones
repaired.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cipm.batches import batch_list
from cipm.errors import CipmError
from cipm.graph.layout import unit_ids
from cipm.graph.parts import Member, PermGroup, Site
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import affine_parameters, for_op, op_roles
from cipm.statistics.capture import SiteRecorder
from cipm.statistics.collection import accumulate
from cipm.statistics.moments import Moments

__all__ = ["producer_sites", "repair"]


@dataclass(frozen=True)
class _Producer:
    """Where a group's units are made: the site, and the module's own weight and bias (their
    names on the module and their members of the group)."""

    site: Site
    names: tuple[str, str]
    weight: Member
    bias: Member


def repair(
    merged: torch.nn.Module,
    endpoints: Sequence[torch.nn.Module],
    graph: SymmetryGraph,
    data: Iterable[Any],
    *,
    weights: Sequence[float] | None = None,
) -> torch.nn.Module:
    """A copy of `merged` whose units have the endpoints' weighted-average pre-activation
    statistics (REPAIR). `endpoints` are the aligned models `merged` was averaged from.

    Groups made by no layer whose module names its weight and bias (`producer_sites`: a
    layer without a bias, or one no plugin knows) are left as they are.

    Raises:
        CipmError: no endpoints, weights of the wrong length, or an empty `data`.
    """
    if not endpoints:
        raise CipmError("repair needs the endpoint models the merge was made from")
    weights = list(weights) if weights is not None else [1.0 / len(endpoints)] * len(endpoints)
    if len(weights) != len(endpoints):
        raise CipmError(f"{len(weights)} weights given for {len(endpoints)} endpoints")
    batches = batch_list(data, "repair")
    producers = _producers(graph, merged)
    sites = {name: p.site for name, p in producers.items()}
    ends = [_moments(m, graph, sites, batches) for m in endpoints]
    repaired = copy.deepcopy(merged)
    # the exported program shares the copy's parameters, so one export sees every correction
    recorder = SiteRecorder(repaired, graph, sites)
    for name, producer in producers.items():
        now = accumulate(recorder, batches, groups=[name], what="repair")[name]
        mean = torch.stack([w * e[name].mean for w, e in zip(weights, ends, strict=True)]).sum(0)
        std = torch.stack([w * e[name].std for w, e in zip(weights, ends, strict=True)]).sum(0)
        scale = torch.where(now.std > 0, std / now.std.clamp_min(1e-12), torch.ones_like(std))
        module = repaired.get_submodule(producer.site.module)
        w, b = (module.get_parameter(n) for n in producer.names)
        with torch.no_grad():
            w.mul_(_along(scale, graph, name, producer.weight, w, 1.0))
            shift = _along(mean - scale * now.mean, graph, name, producer.bias, b, 0.0)
            b.copy_(_along(scale, graph, name, producer.bias, b, 1.0) * b + shift)
    return repaired


def producer_sites(graph: SymmetryGraph, model: torch.nn.Module) -> dict[str, Site]:
    """The sites `repair` corrects: per group that has one, the first activation where a
    layer makes its units, an op of role ``"affine"`` (`cipm_op_roles`) whose output dim is
    exactly the group's units, called by a module that names its weight and bias
    (`cipm_affine_parameters`), both members of the group that make its units."""
    return {name: p.site for name, p in _producers(graph, model).items()}


def _producers(graph: SymmetryGraph, model: torch.nn.Module) -> dict[str, _Producer]:
    found: dict[str, _Producer] = {}
    for group, candidates in _affine_sites(graph):
        for site in candidates:
            try:
                module = model.get_submodule(site.module)
            except AttributeError:  # a path the model does not have: not its graph's site
                continue
            names = affine_parameters(module, graph.blocked_plugins)
            made = _made_by(group, site.module)
            if names is not None and names[0] in made and names[1] in made:
                found[group.name] = _Producer(site, names, made[names[0]], made[names[1]])
                break
    return found


def _affine_sites(graph: SymmetryGraph) -> list[tuple[PermGroup, list[Site]]]:
    """Each group with its sites made by an op of role "affine" whose output dim is exactly
    its units, in graph order."""
    roles = op_roles(graph.blocked_plugins)
    affine = {op: role for op, role in roles.items() if role == "affine"}
    return [(g, [s for s in g.sites if s.layout is None and for_op(affine, s.op)]) for g in graph]


def _made_by(group: PermGroup, module: str) -> Mapping[str, Member]:
    """The members of `group` that are `module`'s own tensors and make its units (do not
    consume them), by name on the module; a tensor holding them along two dims is left out
    (which one to scale would be a guess)."""
    prefix = f"{module}." if module else ""
    made: dict[str, list[Member]] = {}
    for m in group.members:
        name = m.key[len(prefix) :] if m.key.startswith(prefix) else ""
        if name and "." not in name and not m.consumes:
            made.setdefault(name, []).append(m)
    return {name: ms[0] for name, ms in made.items() if len(ms) == 1}


def _along(
    values: torch.Tensor,
    graph: SymmetryGraph,
    group: str,
    member: Member,
    t: torch.Tensor,
    fill: float,
) -> torch.Tensor:
    """Per-unit `values` laid along `member`'s dim of `t` (each unit's value at every
    position of its span, `fill` at positions of other groups), shaped to broadcast against
    `t`, in its dtype."""
    ids = unit_ids(graph.layout(member.key, member.dim), group)
    per_position = torch.where(ids >= 0, values[ids.clamp_min(0)], fill)
    shape = (-1,) + (1,) * (t.dim() - member.dim - 1)
    return per_position.reshape(shape).to(t.device, t.dtype)


def _moments(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    sites: dict[str, Site],
    batches: list[Any],
) -> dict[str, Moments]:
    return accumulate(SiteRecorder(model, graph, sites), batches, what="repair")
