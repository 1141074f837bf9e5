"""`cipm.align`: the permutation that lines model B's units up with model A's, by any
registered method (see `cipm.alignment.methods`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from cipm.alignment.methods import AlignConfig, AlignMethod, AlignProblem
from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.hooks.manager import method_of, plugin_table

__all__ = ["align", "align_methods"]


def align(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    graph: SymmetryGraph,
    *,
    method: str | AlignMethod = "weight",
    data: Iterable[Any] | None = None,
    via: torch.nn.Module | None = None,
    config: AlignConfig | None = None,
) -> Permutation:
    """The permutation `p` such that ``cipm.permute(model_b, p)`` lines up with `model_a`.

    Args:
        model_a: the reference. model_b: the model to permute. Both must fit `graph`
            (every verb that takes two models takes them in this order).
        method: a name from `align_methods()`, or such a method (a function of an
            `AlignProblem`). Built in: ``"weight"`` (weight matching,
            data-free), ``"sinkhorn"`` (relaxed to soft permutations, annealed, rounded,
            then polished by weight matching; data-free, slower), ``"activation"`` (needs
            `data`: an iterable of batches as for `cipm.collect`), ``"ste"``
            (straight-through estimator on the midpoint's cross-entropy; `data` yields
            (inputs, targets); `cipm.alignment.ste.ste_matching` takes another loss and
            step count) or ``"learned"`` (needs `data`: both models sorted by the pretrained
            meta-analysis network's scores, O(n log n) per group; see `cipm.MetaAnalyzer`).
            Activation correlations decide every group observed on its own;
            nested groups (attention heads and the dims within them, GroupNorm groups and
            the channels within them), whose activations only compare once the other is
            aligned, and ties (dead units) go by weights.
        data: batches, for the methods that need them.
        via: a third model to align through ("indirect alignment", seed 000 section 5.3):
            B is aligned to `via`, `via` to A, and the two permutations are composed, so
            B and A never meet (as when two clients only share a reference model).
        config: seed, sweep bound, restarts, progress (`AlignConfig`; default: its defaults).

    Raises:
        CipmError: a model does not fit the graph (naming the group), non-finite weights,
            an unknown method, or a method that needs data without it.
    """
    if via is not None:
        to_via = align(via, model_b, graph, method=method, data=data, config=config)
        return to_via.compose(align(model_a, via, graph, method=method, data=data, config=config))
    chosen: AlignMethod = method_of(
        "cipm_align_methods", "alignment method", method, graph.blocked_plugins
    )
    perm = chosen(AlignProblem(model_a, model_b, graph, data, config or AlignConfig()))
    if not isinstance(perm, Permutation) or perm.graph != graph:
        raise CipmError(
            f"alignment method {method!r} must return a cipm.Permutation of this graph, got "
            f"{type(perm).__name__}"
        )
    return perm


def align_methods(blocked_plugins: Iterable[str] = ()) -> dict[str, AlignMethod]:
    """The alignment methods the plugins provide, by name."""
    return plugin_table("cipm_align_methods", "alignment method", blocked_plugins)
