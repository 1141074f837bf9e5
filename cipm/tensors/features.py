"""Per-unit weight features: each unit's slices of its member tensors, and their norms.

A member that consumes a group's units (`Member.consumes`: the next layer's input columns)
holds the units' outgoing weights; every other member makes or scales them (a layer's output
rows, its bias, a norm's parameters): their incoming weights. Pruning ranks units by these
norms, canonical form sorts by them (summed exactly), and the meta-network reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from cipm.graph.layout import Leaf, occurrences
from cipm.graph.parts import Member, PermGroup
from cipm.graph.symmetry import SymmetryGraph
from cipm.tensors.units import unit_matrix

__all__ = ["UnitFeatures", "unit_features", "unit_slices", "weight_norms"]


@dataclass(frozen=True)
class UnitFeatures:
    """Per-unit weight features: norms of incoming and outgoing weights, and the bias."""

    in_norm: torch.Tensor
    out_norm: torch.Tensor
    bias: torch.Tensor


def unit_slices(
    tensors: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    group: PermGroup,
    *,
    every_occurrence: bool = False,
) -> Iterator[tuple[Member, torch.Tensor]]:
    """Each member's slices of the group's units, as (rows, units) float64 matrices (see
    `unit_matrix`); a member missing from `tensors` is skipped. Where a group appears more
    than once in a dim (rotary halves), the first occurrence, or with `every_occurrence`
    one matrix each."""
    for m in group.members:
        t = tensors.get(m.key)
        if t is None:
            continue
        layout = graph.layout(m.key, m.dim)
        count = (len(occurrences(layout, group.name)) or 1) if every_occurrence else 1
        for k in range(count):
            yield m, unit_matrix(t.detach(), m.dim, layout, group.name, k).to(torch.float64)


def weight_norms(
    tensors: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    group: PermGroup,
    *,
    matrices_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the norms of its incoming (made) and outgoing (consumed) weights over every
    member tensor; with `matrices_only`, only floating-point members of two or more dims
    (weights, not biases, norm parameters or integer buffers)."""
    made = torch.zeros(group.size, dtype=torch.float64)
    used = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        t = tensors.get(m.key)
        if t is None or (matrices_only and (t.dim() < 2 or not t.is_floating_point())):
            continue
        (used if m.consumes else made).add_(_squared_norms(t.detach(), m.dim, graph, m.key, group))
    return made.sqrt(), used.sqrt()


def _squared_norms(
    t: torch.Tensor, dim: int, graph: SymmetryGraph, key: str, group: PermGroup
) -> torch.Tensor:
    """Per unit, the sum of squares of its slice of `t` (the first occurrence): a reduction
    over the other dims first (no copy of the tensor), then over the positions of each unit
    in the dim's layout (heads x head_dim: a head's positions; channels x pixels after a
    flatten: a channel's)."""
    other = [d for d in range(t.dim()) if d != dim]
    if other:
        per_position = torch.linalg.vector_norm(t, dim=other, dtype=torch.float64).square()
    else:  # a bias or norm parameter: its own entries (an empty dim list reduces them all)
        per_position = t.to(torch.float64).square()
    layout = graph.layout(key, dim)
    if isinstance(layout, Leaf):
        return per_position
    return unit_matrix(per_position, 0, layout, group.name).sum(0)


def unit_features(
    state: Mapping[str, torch.Tensor], graph: SymmetryGraph, group: PermGroup
) -> UnitFeatures:
    """Weight features of a group's units, read from a model's state (its member tensors).

    The norms are those of `weight_norms` over weight matrices; the bias is the shift of the
    layer that makes the units: the one 1-D member beside an incoming weight (a member of two
    or more dims that makes the units) among the same module's tensors (per head: the mean
    over its dims), zeros where no layer has one.
    """
    in_norm, out_norm = weight_norms(state, graph, group, matrices_only=True)
    made = [
        m
        for m in group.members
        if not m.consumes and m.key in state and state[m.key].is_floating_point()
    ]
    incoming = {_module(m.key) for m in made if state[m.key].dim() >= 2}
    shifts: dict[str, list[Member]] = {}
    for m in made:
        if state[m.key].dim() == 1 and _module(m.key) in incoming:
            shifts.setdefault(_module(m.key), []).append(m)
    bias = torch.zeros(group.size, dtype=torch.float64)
    for found in shifts.values():
        if len(found) == 1:  # two or more: which is the shift would be a guess
            (m,) = found
            t = state[m.key].detach()
            bias = unit_matrix(t, m.dim, graph.layout(m.key, m.dim), group.name)
            bias = bias.to(torch.float64).mean(0)
            break
    return UnitFeatures(in_norm, out_norm, bias)


def _module(key: str) -> str:
    """The path of the module that holds state tensor `key`."""
    return key.rpartition(".")[0]
