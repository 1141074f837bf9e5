"""What pruning to given sizes makes, in shapes only: a copy of the model on the meta device,
each group cut to its first units. It holds no values and costs no memory, so a caller can
check before the work what the result will be (that a file format can describe it)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.fold import pruned_state, selection_plan
from cipm.tensors.fitted import fitted_tensors
from cipm.tensors.resize import with_tensors

__all__ = ["sized_copy"]


def sized_copy(
    model: torch.nn.Module, graph: SymmetryGraph, sizes: Mapping[str, int]
) -> torch.nn.Module:
    """A copy of `model` on the meta device whose groups named in `sizes` keep that many
    units (resized by the same plugins as `cipm.prune`); `model` is not changed.

    Raises:
        CipmError: the model does not fit `graph`, or a module cannot take its new size.
    """
    fitted_tensors(model, graph, "the model")
    every: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    every.update(model.named_buffers(remove_duplicate=False))
    empty = {k: torch.empty_like(v, device="meta") for k, v in every.items()}
    plans = {name: selection_plan(torch.arange(k)) for name, k in sizes.items()}
    return with_tensors(
        model, {**empty, **pruned_state(empty, graph, plans)}, graph.blocked_plugins
    )
