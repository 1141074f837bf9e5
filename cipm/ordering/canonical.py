"""`cipm.canonicalize`: one standard order of every group's units, whatever order they came in.

Each unit gets a key that depends only on its own weights as a *multiset* in every member
tensor, so it is the same wherever any permutation of the symmetry graph moved the unit or
its neighbours: the sum, the sum of squares and the maximum of each unit's slice of a member
tensor ignore the order of every other group, and the sums are taken exactly (values rounded
to a fixed point 36 bits below the tensor's largest magnitude, then added as integers), so no
order of addition can change a bit. Units are then sorted by their keys: first by weight-path
magnitude ``||in|| * ||out||``, largest first (the standard order reads from the strongest
unit down), then by each member's summaries in graph order. Permuted copies of a model therefore
canonicalize to the very same tensors, and a canonical model is its own canonical form.

With statistics, the primary key is the units' activation RMS (largest first), rounded to 28
significant bits so that the last-bit noise of two runs over the same data cannot reorder
them, and the weight keys break ties.

With learned scores (``method="learned"``: the meta-analysis network's, see `cipm.meta`), the
primary key is the score (highest first), rounded to 24 bits below the group's largest
magnitude so that rounding noise cannot reorder units, and the weight keys break ties: the
network is permutation-equivariant, so the order is again the same for every permuted copy.

Units whose keys tie exactly agree in every summary to 36 bits (dead or duplicated units, in
practice); they keep their relative order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cipm.errors import CipmError
from cipm.graph.parts import PermGroup
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.ordering.methods import canonical_method
from cipm.ordering.problem import order_problem
from cipm.statistics.group import Statistics
from cipm.tensors.features import unit_slices
from cipm.tensors.modify import permute_state
from cipm.tensors.resize import with_tensors

__all__ = ["canonical_order", "canonical_permutation", "canonicalize"]


def canonicalize(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    *,
    stats: Statistics | None = None,
    method: Any = "analytic",
) -> torch.nn.Module:
    """A copy of `model` with every group's units in canonical order (same function).

    Args:
        model: the model `graph` was traced from; it is not changed.
        graph: its symmetry graph.
        stats: optional `cipm.collect` statistics of this model: order units by activation
            RMS instead of weight magnitude (data-free by default).
        method: a name from `cipm.ordering.canonical_methods()`, or such a method. Built
            in: ``"analytic"`` (the keys above) and ``"learned"``: order by the scores of
            the pretrained meta-analysis network, which reads `stats` (required; another
            network: ``method=meta.order``).

    Example (``again`` holds the very same tensors as ``canon``):
        >>> canon = cipm.canonicalize(model, graph)
        >>> p = graph.random_permutation(seed=0)
        >>> again = cipm.canonicalize(cipm.permute(model, p), graph)
        >>> all(torch.equal(canon.state_dict()[k], v) for k, v in again.state_dict().items())
        True
    """
    chosen = canonical_method(method, graph)
    problem = order_problem(model, graph, stats)
    perm = chosen(problem)
    if not isinstance(perm, Permutation) or perm.graph != graph:
        raise CipmError(
            f"canonical method {method!r} must return a cipm.Permutation of this graph, got "
            f"{type(perm).__name__}"
        )
    state = permute_state(dict(problem.tensors), perm)
    return with_tensors(model, state, graph.blocked_plugins)


def canonical_permutation(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    *,
    stats: Statistics | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> Permutation:
    """The permutation that puts `model` in canonical form (see `canonicalize`); with
    `scores` (one per unit and group, highest first), ordered by them before the rest.

    Raises:
        CipmError: the model does not fit the graph, or its tensors hold no values (the meta
            device).
    """
    problem = order_problem(model, graph, stats)
    return canonical_order(problem.tensors, graph, stats=stats, scores=scores)


def canonical_order(
    tensors: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    *,
    stats: Statistics | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> Permutation:
    """`canonical_permutation` of a model's tensors, already fitted to `graph`."""
    empty = [key for key, t in tensors.items() if t.is_meta]
    if empty:
        raise CipmError(
            f"canonical form reads weights, and '{empty[0]}' is on the meta device (no values); "
            "load the model's weights first"
        )
    order: dict[str, torch.Tensor] = {}
    for group in graph:
        keys = _weight_keys(tensors, graph, group)
        if stats is not None:
            s = stats[group.name].moments
            rms = (s.comoment.diagonal() / s.count + s.mean.square()).sqrt()
            keys.insert(0, -_round_bits(rms))
        if scores is not None:
            keys.insert(0, -_round_relative(scores[group.name].detach().to(torch.float64)))
        # np.lexsort sorts by the last key first; it is stable, so exact ties keep their order
        order[group.name] = torch.from_numpy(np.lexsort([k.numpy() for k in reversed(keys)]))
    return Permutation(graph, order)


def _weight_keys(
    tensors: Mapping[str, torch.Tensor], graph: SymmetryGraph, group: PermGroup
) -> list[torch.Tensor]:
    """Per unit: -||in|| * ||out||, then (sum, sum of squares, max) of each member slice."""
    made = torch.zeros(group.size, dtype=torch.float64)
    used = torch.zeros(group.size, dtype=torch.float64)
    summaries: list[torch.Tensor] = []
    for m, x in unit_slices(tensors, graph, group, every_occurrence=True):
        total, _ = _exact_sum(x)
        square, scale = _exact_sum(x.square())
        summaries += [total, square, x.amax(dim=0)]
        (used if m.consumes else made).add_(square.to(torch.float64) / scale)
    return [-(made.sqrt() * used.sqrt()), *summaries]


def _exact_sum(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Column sums of `x` that no order of its rows can change: every value is rounded to a
    fixed point of 36 bits below the largest magnitude (a power-of-two scale, so the scaling
    is exact) and the integers are summed exactly. Returns the sums and the scale."""
    top = float(x.abs().max()) if x.numel() else 0.0
    scale = math.ldexp(1.0, 36 - math.frexp(top)[1]) if top > 0 else 1.0  # 2^27 rows fit int64
    return torch.round(x * scale).to(torch.int64).sum(dim=0), scale


def _round_relative(x: torch.Tensor, bits: int = 24) -> torch.Tensor:
    """`x` rounded to a grid `bits` below its largest magnitude."""
    top = float(x.abs().max()) if x.numel() else 0.0
    if top == 0.0:
        return torch.zeros_like(x)
    return torch.round(torch.ldexp(x, torch.tensor(bits - math.frexp(top)[1])))


def _round_bits(x: torch.Tensor, bits: int = 28) -> torch.Tensor:
    mantissa, exponent = torch.frexp(x)
    return torch.ldexp(torch.round(torch.ldexp(mantissa, torch.tensor(bits))), exponent - bits)
