"""`cipm.align`: the permutation that lines model B's units up with model A's.

Weight matching (Git Re-Basin, generalized to any symmetry graph): maximize the sum over
every state tensor of <W_A, P(W_B)>. For one group, with the others held, that is a linear
assignment on C[i, j] = sum of A's unit-i slices dotted with B's unit-j slices over every
tensor the group lives in; coordinate descent over groups in a seeded random order stops at
a fixed point. Activation matching assigns each group on the cross-correlation of the two
models' units on data (`cipm.collect_cross`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from scipy.optimize import linear_sum_assignment

from cipm.collect import collect_cross, model_inputs
from cipm.errors import CipmError, PermutationError
from cipm.graph import GroupKind, Leaf, Product, SymmetryGraph, TensorAxis
from cipm.modify import fitted_tensors, index_map
from cipm.permutation import Permutation
from cipm.units import occurrences, pair_matrix, unit_matrix

__all__ = ["align", "weight_matching"]

Method = Literal["weight", "activation"]

# how much activation evidence outweighs the (normalized) weight cost when both are given
EVIDENCE = 1e3


def align(
    model_b: torch.nn.Module,
    model_a: torch.nn.Module,
    graph: SymmetryGraph,
    *,
    method: Method = "weight",
    data: Iterable[Any] | None = None,
    seed: int = 0,
    max_sweeps: int = 100,
    progress: bool = False,
) -> Permutation:
    """The permutation `p` such that ``cipm.permute(model_b, p)`` lines up with `model_a`.

    Args:
        model_b: the model to permute. model_a: the reference. Both must fit `graph`.
        method: ``"weight"`` (weight matching, data-free) or ``"activation"`` (needs `data`:
            an iterable of batches as for `cipm.collect`). Activation correlations decide
            every group observed on its own; nested groups (attention heads and the dims
            within them, GroupNorm groups and the channels within them), whose activations
            only compare once the other is aligned, and ties (dead units) go by weights.
        seed: order of groups in coordinate descent.
        max_sweeps: bound on coordinate-descent sweeps (it normally stops at a fixed point).

    Raises:
        CipmError: a model does not fit the graph (naming the group), non-finite weights,
            an unknown method, or activation matching without data.
    """
    state_a = _state(model_a, graph, "model_a")
    state_b = _state(model_b, graph, "model_b")
    if method == "weight":
        return weight_matching(state_a, state_b, graph, seed=seed, max_sweeps=max_sweeps)
    if method != "activation":
        raise CipmError(f"unknown alignment method {method!r}; use 'weight' or 'activation'")
    if data is None:
        raise CipmError("activation matching needs data: pass data=<iterable of batches>")
    cross = collect_cross(model_a, model_b, graph, data, inputs=model_inputs, progress=progress)
    nesting = {g.within for g in graph} | {g.name for g in graph if g.within}
    evidence = {
        g.name: cross.corr(g.name)
        for g in graph
        if g.kind not in (GroupKind.HEADS, GroupKind.WITHIN_HEAD) and g.name not in nesting
    }
    return weight_matching(
        state_a, state_b, graph, seed=seed, max_sweeps=max_sweeps, evidence=evidence
    )


def weight_matching(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    *,
    seed: int = 0,
    max_sweeps: int = 100,
    restarts: int = 3,
    evidence: Mapping[str, torch.Tensor] | None = None,
) -> Permutation:
    """Weight matching on state dicts.

    `evidence` maps groups to (n, n) scores (activation correlations) that decide their
    assignment wherever they discriminate; the weights only break their ties (units that are
    constant on the data, such as dead ReLUs, correlate 0 with everything).

    An outer group of a nested pair (heads over head_dim, GroupNorm groups over their
    channels) is scored invariantly to the inner one's alignment (see `_cost`); without
    that, coordinate descent gets stuck with both wrong. Coordinate descent can still stop
    at a local optimum (seen in about 2 % of orders on a transformer whose layers start as
    copies), so it restarts from up to `restarts` group orders and keeps the best match,
    stopping early when a match reaches the Cauchy-Schwarz bound (B is a permuted A).
    """
    plan = _Plan(graph, dict(evidence or {}))
    bound = math.sqrt(_total(state_a, state_a, plan, None) * _total(state_b, state_b, plan, None))
    best: dict[str, torch.Tensor] = {}
    best_score = -math.inf
    for k in range(max(restarts, 1)):
        perm = plan.descend(state_a, state_b, seed + k, max_sweeps)
        match = _total(state_a, state_b, plan, perm)
        score = match + sum(
            EVIDENCE * float(e[torch.arange(len(e)), perm[n]].sum())
            for n, e in plan.evidence.items()
        )
        if score > best_score:
            best, best_score = perm, score
        if match >= bound * (1 - 1e-9):
            break
    return Permutation(graph, best)


class _Plan:
    """Which tensor axes each group lives in, for coordinate descent."""

    def __init__(self, graph: SymmetryGraph, evidence: dict[str, torch.Tensor]) -> None:
        self.graph, self.evidence = graph, evidence
        self.axes_of: dict[str, list[TensorAxis]] = {}
        self.by_key: dict[str, list[TensorAxis]] = {}
        self.inner = {g.within: g.name for g in graph if g.within}  # one nested group each
        for axis in graph.axes:
            self.by_key.setdefault(axis.key, []).append(axis)
            for name in dict.fromkeys(axis.groups()):
                self.axes_of.setdefault(name, []).append(axis)

    def descend(
        self,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
        seed: int,
        max_sweeps: int,
    ) -> dict[str, torch.Tensor]:
        perm = {g.name: torch.arange(g.size) for g in self.graph}
        names = list(perm)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(max_sweeps):
            changed = False
            for i in torch.randperm(len(names), generator=gen).tolist():
                name = names[i]
                cost = _cost(
                    name,
                    self.axes_of[name],
                    self.by_key,
                    state_a,
                    state_b,
                    perm,
                    self.inner.get(name),
                )
                if name in self.evidence:  # weights, scaled into [-1, 1], only break ties
                    scale = cost.abs().max().clamp_min(1e-300)
                    cost = cost / scale + EVIDENCE * self.evidence[name]
                new = _assign(cost)
                if not torch.equal(new, perm[name]):
                    perm[name], changed = new, True
            if not changed:
                break
        return perm


def _total(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    plan: _Plan,
    perm: dict[str, torch.Tensor] | None,
) -> float:
    """Sum over the graph's tensors of <W_A, P(W_B)> (P = identity when perm is None)."""
    total = 0.0
    for key, axes in plan.by_key.items():
        w_b = state_b[key].to(torch.float64)
        if perm is not None:
            for axis in axes:
                w_b = w_b.index_select(axis.dim, index_map(axis.layout, perm))
        total += float((state_a[key].to(torch.float64) * w_b).sum())
    return total


def _cost(
    name: str,
    axes: list[TensorAxis],
    by_key: dict[str, list[TensorAxis]],
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perm: dict[str, torch.Tensor],
    inner: str | None = None,
) -> torch.Tensor:
    """C[i, j]: how well B's unit j matches A's unit i, with every other group as in `perm`.

    With `inner` (a group nested in this one, as head_dim in heads), wherever the two share a
    product the score of a pair is its best match over inner alignments (a small assignment
    per pair), so it does not depend on how the inner group is currently aligned.
    """
    size = len(perm[name])
    cost = torch.zeros(size, size, dtype=torch.float64)
    blocks: torch.Tensor | None = None
    held = perm | {name: torch.arange(size)}
    if inner is not None:
        held[inner] = torch.arange(len(perm[inner]))
    for axis in axes:
        w_a = state_a[axis.key].to(torch.float64)
        w_b = state_b[axis.key].to(torch.float64)
        for other in by_key[axis.key]:  # B with all but these groups (on this dim) applied
            maps = held if other.dim == axis.dim else perm
            w_b = w_b.index_select(other.dim, index_map(other.layout, maps))
        for k, path in enumerate(occurrences(axis.layout, name)):
            sibling = _sibling(axis, path, inner)
            if sibling is None:
                a = unit_matrix(w_a, axis.dim, axis.layout, name, k)
                b = unit_matrix(w_b, axis.dim, axis.layout, name, k)
                cost += a.T @ b
                continue
            a3 = pair_matrix(w_a, axis.dim, axis.layout, path, sibling)
            b3 = pair_matrix(w_b, axis.dim, axis.layout, path, sibling)
            pair = torch.einsum("rki,rlj->ijkl", a3, b3)
            blocks = pair if blocks is None else blocks + pair
    if blocks is not None:
        for i in range(size):
            for j in range(size):
                rows, cols = linear_sum_assignment(blocks[i, j].numpy(), maximize=True)
                cost[i, j] += float(blocks[i, j][rows, cols].sum())
    return cost


def _sibling(axis: TensorAxis, path: tuple[int, ...], inner: str | None) -> int | None:
    """Index of `inner` among the factors of the product that holds the group at `path`."""
    if inner is None or not path:
        return None
    node = axis.layout
    for i in path[:-1]:
        node = node.factors[i] if isinstance(node, Product) else node.parts[i]  # type: ignore[union-attr]
    if not isinstance(node, Product):
        return None
    for k, factor in enumerate(node.factors):
        if isinstance(factor, Leaf) and factor.group == inner:
            return k
    return None


def _assign(score: torch.Tensor) -> torch.Tensor:
    """perm[i] = the B unit assigned to A's unit i, maximizing the total score."""
    _, cols = linear_sum_assignment(score.detach().cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


def _state(model: torch.nn.Module, graph: SymmetryGraph, which: str) -> dict[str, torch.Tensor]:
    try:
        tensors = fitted_tensors(model, graph)
    except PermutationError as e:
        raise CipmError(f"{which}: {e}") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CipmError(f"{which} has non-finite values in '{key}'; cannot align it")
    return tensors
