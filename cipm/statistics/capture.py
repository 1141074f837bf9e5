"""Observing activations at group sites while a model runs through its exported graph.

The model is exported once per distinct input signature (torch.export specializes shapes), a
store call is inserted after each site node, and the graph runs as a GraphModule. Nothing but
the current batch's site activations is held.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from cipm.batches import as_args
from cipm.discovery.program import program_of
from cipm.errors import CipmError, TraceError
from cipm.graph.parts import GroupKind, PermGroup, Site
from cipm.graph.symmetry import SymmetryGraph
from cipm.tensors.units import unit_blocks

__all__ = ["SiteRecorder", "representative_site"]


def representative_site(group: PermGroup) -> Site:
    """The activation that stands for a group's units, among those where it fills a whole
    dimension: the last one in the graph, which is what the group's consumer reads (after the
    nonlinearity for hidden units, after any pooling for channels, the per-head output for
    heads). A residual stream is read by many layers at every position, so it is the last of
    those with the most samples per unit (after the final norm, not a pooled or [CLS]
    vector that only the classifier reads). The last site at all when the group never fills
    a dimension."""
    whole = [s for s in group.sites if s.layout is None]
    if not whole:
        return group.sites[-1]
    if group.kind is GroupKind.RESIDUAL:
        most = max(s.samples for s in whole)
        whole = [s for s in whole if s.samples == most]
    return whole[-1]


class SiteRecorder:
    """Runs `model` on inputs and returns each group's units at its representative site."""

    def __init__(
        self,
        model: torch.nn.Module,
        graph: SymmetryGraph,
        sites: Mapping[str, Site] | None = None,
    ) -> None:
        """`sites`: which activation to observe per group (default: `representative_site`
        of every group)."""
        self.model, self.graph = model, graph
        self.sites = (
            dict(sites) if sites is not None else {g.name: representative_site(g) for g in graph}
        )
        self._programs: dict[tuple[Any, ...], torch.fx.GraphModule] = {}
        self._captured: dict[str, torch.Tensor] = {}
        self._wanted: set[str] = set()

    def run(
        self, inputs: Any, batch: int, groups: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """(pre, units, post) blocks per group for one batch of model inputs (see unit_blocks).

        With `groups`, only those groups' units, and the model stops running as soon as it
        has computed them (a group early in the model costs a fraction of a forward pass).
        """
        program = self._program(inputs, batch)
        args, kwargs = as_args(inputs)
        wanted = {n: self.sites[n] for n in groups} if groups is not None else self.sites
        self._captured, self._wanted = {}, {site.node for site in wanted.values()}
        try:
            with torch.no_grad():
                program(*args, **kwargs)
        except _Seen:
            pass
        except Exception as e:  # the model's own code failing on this batch (a dtype, ...)
            raise CipmError(
                f"batch {batch} does not fit {type(self.model).__name__} "
                f"(inputs {_describe(inputs)}): {type(e).__name__}: {e}"
            ) from e
        units = {
            name: unit_blocks(self._captured[site.node], site.dim, site.layout, name)
            for name, site in wanted.items()
        }
        self._captured = {}
        return units

    def check(self, inputs: Any) -> None:
        """Export for this input signature (cached for `run`) and check that every site is
        there with the right shape; raises CipmError otherwise."""
        self._program(inputs, 0)

    def block_shape(self, inputs: Any, group: str) -> torch.Size:
        """The (pre, units, post) shape `run` gives for `group` on inputs of this signature,
        read from the exported program: nothing runs."""
        site = self.sites[group]
        nodes = {n.name: n for n in self._program(inputs, 0).graph.nodes}
        val = nodes[site.node].meta["val"]
        return unit_blocks(
            torch.empty(val.shape, device="meta"), site.dim, site.layout, group
        ).shape

    def _instrument(self, module: torch.fx.GraphModule) -> torch.fx.GraphModule:
        """Check every site exists with the right shape, and store it when computed."""
        nodes = {n.name: n for n in module.graph.nodes}
        for name, site in self.sites.items():
            node = nodes.get(site.node)
            val = node.meta.get("val") if node is not None else None
            fits = isinstance(val, torch.Tensor) and val.dim() > site.dim
            if fits and site.layout is None:
                fits = val.shape[site.dim] == self.graph[name].size  # type: ignore[union-attr]
            if not fits:
                raise CipmError(
                    f"group '{name}' of the symmetry graph ({self.graph.model}) is not "
                    f"observable in {type(self.model).__name__}: no activation '{site.node}' "
                    "of the right shape. Trace this model and use its own graph."
                )
        for node_name in {s.node for s in self.sites.values()}:
            with module.graph.inserting_after(nodes[node_name]):
                module.graph.call_function(self._store, (node_name, nodes[node_name]))
        module.recompile()
        return module

    def _store(self, node: str, value: torch.Tensor) -> None:
        self._captured[node] = value
        if node in self._wanted and self._wanted <= self._captured.keys():
            raise _Seen

    def _program(self, inputs: Any, batch: int) -> torch.fx.GraphModule:
        key = _signature(inputs)
        if key not in self._programs:
            try:
                exported = program_of(self.model, inputs, warn_training=False)
            except TraceError as e:
                raise CipmError(
                    f"batch {batch} does not fit {type(self.model).__name__} "
                    f"(inputs {_describe(inputs)}): {e}"
                ) from e
            module = exported.module()
            assert isinstance(module, torch.fx.GraphModule)
            self._programs[key] = self._instrument(module)
        return self._programs[key]


class _Seen(Exception):  # control flow, not an error
    """Every site asked for has been computed: the rest of the forward pass is skipped."""


def _signature(inputs: Any) -> tuple[Any, ...]:
    leaves, spec = torch.utils._pytree.tree_flatten(inputs)
    return (str(spec), *((tuple(x.shape), x.dtype) if torch.is_tensor(x) else x for x in leaves))


def _describe(inputs: Any) -> str:
    leaves, _ = torch.utils._pytree.tree_flatten(inputs)
    return ", ".join(str(tuple(x.shape)) if torch.is_tensor(x) else repr(x) for x in leaves)
