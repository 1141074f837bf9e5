"""A model run with its units scaled by soft masks: the end-to-end view the compression
objective trains on.

The model is exported once, and after the representative site of each masked group its
activation is multiplied, along the group's dim, by the group's mask (one factor per unit,
1 where the dim holds other units), so the output is what the model computes when units fade
out, differentiable in the masks. The model itself is copied, never changed.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from cipm.batches import as_args
from cipm.discovery.program import program_of
from cipm.graph.layout import unit_ids
from cipm.graph.parts import Site
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.capture import representative_site

__all__ = ["MaskedModel"]


class MaskedModel:
    """``masked(inputs, masks)``: outputs of the model with group `g`'s units scaled by
    ``masks[g]`` (units,) at its representative site, for the groups in `groups`."""

    def __init__(
        self, model: torch.nn.Module, graph: SymmetryGraph, inputs: Any, groups: Sequence[str]
    ) -> None:
        frozen = copy.deepcopy(model).requires_grad_(False)
        self.sites: dict[str, Site] = {g: representative_site(graph[g]) for g in groups}
        self._masks: Mapping[str, torch.Tensor] = {}
        module = program_of(frozen, inputs, warn_training=False).module()
        assert isinstance(module, torch.fx.GraphModule)
        nodes = {n.name: n for n in module.graph.nodes}
        for node in {s.node for s in self.sites.values()}:
            with module.graph.inserting_after(nodes[node]):
                scaled = module.graph.call_function(self._scale, (node, nodes[node]))
            nodes[node].replace_all_uses_with(scaled, delete_user_cb=partial(operator.ne, scaled))
        module.recompile()
        self._program = module

    def __call__(self, inputs: Any, masks: Mapping[str, torch.Tensor]) -> Any:
        self._masks = masks
        args, kwargs = as_args(inputs)
        try:
            return self._program(*args, **kwargs)
        finally:
            self._masks = {}

    def _scale(self, node: str, value: torch.Tensor) -> torch.Tensor:
        for name, site in self.sites.items():
            if site.node != node or name not in self._masks:
                continue
            mask = self._masks[name].to(value.dtype)
            if site.layout is not None:  # the group is a factor or segment of this dim
                ids = unit_ids(site.layout, name)
                mask = torch.where(ids >= 0, mask[ids.clamp_min(0)], torch.ones_like(mask[:1]))
            shape = [1] * value.dim()
            shape[site.dim] = -1
            value = value * mask.view(shape)
        return value
