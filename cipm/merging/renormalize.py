"""REPAIR (Jordan et al., 2022): after averaging aligned models, rescale every unit's
pre-activation mean and standard deviation to the average of the endpoints' own.

Averaging two aligned networks shrinks the variance of their hidden units ("variance
collapse"), and later layers see activations of the wrong scale. For each group, in graph
order, the layer that makes its units (a Linear, a convolution with a bias, or the
normalization after one) gets an affine correction folded into its weight and bias; the merged
model's statistics are measured again after each correction, so later groups see earlier ones
repaired.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from cipm.batches import batch_list
from cipm.errors import CipmError
from cipm.graph.symmetry import Site, SymmetryGraph
from cipm.hooks.manager import for_op, op_roles
from cipm.statistics.capture import SiteRecorder
from cipm.statistics.collection import accumulate
from cipm.statistics.moments import Moments

__all__ = ["producer_sites", "repair"]


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

    Groups whose producing layer has no bias to fold the shift into are left as they are.

    Raises:
        CipmError: no endpoints, weights of the wrong length, or an empty `data`.
    """
    if not endpoints:
        raise CipmError("repair needs the endpoint models the merge was made from")
    weights = list(weights) if weights is not None else [1.0 / len(endpoints)] * len(endpoints)
    if len(weights) != len(endpoints):
        raise CipmError(f"{len(weights)} weights given for {len(endpoints)} endpoints")
    batches = batch_list(data, "repair")
    sites = producer_sites(graph)
    ends = [_moments(m, graph, sites, batches) for m in endpoints]
    repaired = copy.deepcopy(merged)
    # the exported program shares the copy's parameters, so one export sees every correction
    recorder = SiteRecorder(repaired, graph, sites)
    for name, site in sites.items():
        now = accumulate(recorder, batches, groups=[name], what="repair")[name]
        mean = torch.stack([w * e[name].mean for w, e in zip(weights, ends, strict=True)]).sum(0)
        std = torch.stack([w * e[name].std for w, e in zip(weights, ends, strict=True)]).sum(0)
        scale = torch.where(now.std > 0, std / now.std.clamp_min(1e-12), torch.ones_like(std))
        module = repaired.get_submodule(site.module)
        with torch.no_grad():
            w, b = module.get_parameter("weight"), module.get_parameter("bias")
            shape = (-1,) + (1,) * (w.dim() - 1)
            w.mul_(scale.reshape(shape).to(w.dtype))
            b.copy_(scale.to(b.dtype) * b + (mean - scale * now.mean).to(b.dtype))
    return repaired


def producer_sites(graph: SymmetryGraph) -> dict[str, Site]:
    """Per group that has one, the first activation where a layer with weight and bias
    makes its units: an op of role ``"affine"`` (`cipm_op_roles`) called by a module whose
    ``weight`` and ``bias`` are members of the group along dim 0."""
    affine = {op: role for op, role in op_roles(graph.blocked_plugins).items() if role == "affine"}
    sites: dict[str, Site] = {}
    for group in graph:
        members = {(m.key, m.dim) for m in group.members}
        for site in group.sites:
            if site.layout is not None or not for_op(affine, site.op):
                continue
            if {(f"{site.module}.weight", 0), (f"{site.module}.bias", 0)} <= members:
                sites[group.name] = site
                break
    return sites


def _moments(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    sites: dict[str, Site],
    batches: list[Any],
) -> dict[str, Moments]:
    return accumulate(SiteRecorder(model, graph, sites), batches, what="repair")
