"""Weight matching: coordinate descent over a symmetry graph's groups.

Maximize the sum over every state tensor of <W_A, P(W_B)>. For one group, with the others
held, that is a linear assignment on C[i, j] = A's unit-i slices dotted with B's unit-j slices
over every tensor the group lives in. Groups whose neighbours did not move are not re-solved;
the descent stops when a sweep changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from cipm.alignment.methods import AlignProblem
from cipm.graph.layout import Leaf, Path, Product, index_map, node_at, occurrences
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import SymmetryGraph, TensorAxis
from cipm.tensors.units import pair_matrix, unit_matrix

__all__ = ["EVIDENCE", "assign", "weight_matching", "weight_method"]

# how much activation evidence outweighs the (normalized) weight cost when both are given
EVIDENCE = 1e3


def weight_matching(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    *,
    seed: int = 0,
    max_sweeps: int = 100,
    restarts: int = 1,
    evidence: Mapping[str, torch.Tensor] | None = None,
    start: Permutation | None = None,
) -> Permutation:
    """Weight matching on state dicts.

    `start` warm-starts the descent from a permutation (STE re-solves a slowly moving
    problem every step; from the last answer a sweep or two settles it).

    `evidence` maps groups to (n, n) scores (activation correlations) that decide their
    assignment wherever they discriminate; the weights only break their ties (units that are
    constant on the data, such as dead ReLUs, correlate 0 with everything).

    An outer group of a nested pair (heads over head_dim, GroupNorm groups over their
    channels) is scored invariantly to the inner one's alignment (see `_cost`); without
    that, coordinate descent gets stuck with both wrong. Coordinate descent can still stop
    at a local optimum (seen in about 2 % of orders on a transformer whose layers start as
    copies of each other): with `restarts` > 1 it tries more group orders and keeps the best
    match, stopping early when a match reaches the Cauchy-Schwarz bound (B is a permuted A).
    """
    plan = _Plan(graph, dict(evidence or {}))
    bound = math.sqrt(_total(state_a, state_a, plan, None) * _total(state_b, state_b, plan, None))
    best: dict[str, torch.Tensor] = {}
    best_score = -math.inf
    for k in range(max(restarts, 1)):
        perm = plan.descend(state_a, state_b, seed + k, max_sweeps, start if k == 0 else None)
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
        self.by_key = graph.by_key
        self.inner = {g.within: g.name for g in graph if g.within}  # one nested group each
        self.neighbours: dict[str, set[str]] = {g.name: set() for g in graph}
        for axis in graph.axes:
            for name in dict.fromkeys(axis.groups()):
                self.axes_of.setdefault(name, []).append(axis)
        for axes in self.by_key.values():  # groups sharing a tensor change each other's cost
            shared = {name for axis in axes for name in axis.groups()}
            for name in shared:
                self.neighbours[name] |= shared - {name}

    def descend(
        self,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
        seed: int,
        max_sweeps: int,
        start: Permutation | None = None,
    ) -> dict[str, torch.Tensor]:
        run = _Descent(self, state_a, state_b)
        if start is not None:
            for name in run.perm:
                run.update(name, start[name])
        names = list(run.perm)
        stale = set(names)  # groups whose cost may have changed since they were last solved
        gen = torch.Generator().manual_seed(seed)
        for sweep in range(max_sweeps):
            changed = False
            # the first sweep goes in graph order (inputs to outputs), so each group sees its
            # predecessor aligned already; later sweeps go in a seeded random order
            order = range(len(names)) if sweep == 0 and seed == 0 else None
            for i in order or torch.randperm(len(names), generator=gen).tolist():
                name = names[i]
                if name not in stale:
                    continue
                stale.discard(name)
                current = run.perm[name]
                cost = run.cost(name)  # columns: B's units where they stand now
                if name in self.evidence:  # weights, scaled into [-1, 1], only break ties
                    scale = cost.abs().max().clamp_min(1e-300)
                    cost = cost / scale + EVIDENCE * self.evidence[name][:, current]
                # near a fixed point the best assignment is near the diagonal, which the
                # solver finds several times faster than from scratch
                new = current[assign(cost)]
                if not torch.equal(new, run.perm[name]):
                    run.update(name, new)
                    changed = True
                    stale |= self.neighbours[name]
            if not changed:
                break
        return run.perm


class _Descent:
    """State of one coordinate descent: the permutation so far and B permuted by it."""

    def __init__(
        self, plan: _Plan, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]
    ) -> None:
        self.plan, self.state_b = plan, state_b
        self.perm = {g.name: torch.arange(g.size) for g in plan.graph}
        self.b = {key: state_b[key].detach() for key in plan.by_key}  # B under self.perm
        self.a = {key: state_a[key].detach() for key in plan.by_key}
        self._a_units: dict[tuple[str, int, str, int], torch.Tensor] = {}

    def update(self, name: str, new: torch.Tensor) -> None:
        self.perm[name] = new
        for key in {axis.key for axis in self.plan.axes_of[name]}:
            w = self.state_b[key].detach()
            for axis in self.plan.by_key[key]:
                w = w.index_select(axis.dim, index_map(axis.layout, self.perm))
            self.b[key] = w

    def cost(self, name: str) -> torch.Tensor:
        """C[i, j]: how well the B unit now at position j matches A's unit i, with every
        other group as it stands. With an inner group (head_dim in heads) sharing a product,
        a pair's score is its best match over inner alignments (a small assignment per
        pair), so it does not depend on how the inner group stands.
        """
        size = len(self.perm[name])
        inner = self.plan.inner.get(name)
        cost = torch.zeros(size, size, dtype=torch.float64)
        blocks: torch.Tensor | None = None
        for axis in self.plan.axes_of[name]:
            for k, path in enumerate(occurrences(axis.layout, name)):
                sibling = _sibling(axis, path, inner)
                w_b = self.b[axis.key]
                if sibling is None:
                    a = self._a_unit(axis, name, k)
                    b = unit_matrix(w_b, axis.dim, axis.layout, name, k)
                    cost += (a.T @ b.to(a.dtype)).to(torch.float64)
                    continue
                a3 = pair_matrix(self.a[axis.key], axis.dim, axis.layout, path, sibling)
                b3 = pair_matrix(w_b, axis.dim, axis.layout, path, sibling)
                pair = torch.einsum("rki,rlj->ijkl", a3.double(), b3.double())
                blocks = pair if blocks is None else blocks + pair
        if blocks is not None:
            from scipy.optimize import linear_sum_assignment

            for i in range(size):
                for j in range(size):
                    rows, cols = linear_sum_assignment(blocks[i, j].numpy(), maximize=True)
                    cost[i, j] += float(blocks[i, j][rows, cols].sum())
        return cost

    def _a_unit(self, axis: TensorAxis, name: str, k: int) -> torch.Tensor:
        key = (axis.key, axis.dim, name, k)
        if key not in self._a_units:
            self._a_units[key] = unit_matrix(self.a[axis.key], axis.dim, axis.layout, name, k)
        return self._a_units[key]


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


def _sibling(axis: TensorAxis, path: Path, inner: str | None) -> int | None:
    """Index of `inner` among the factors of the product that holds the group at `path`."""
    if inner is None or not path:
        return None
    node = node_at(axis.layout, path[:-1])
    if not isinstance(node, Product):
        return None
    for k, factor in enumerate(node.factors):
        if isinstance(factor, Leaf) and factor.group == inner:
            return k
    return None


def weight_method(problem: AlignProblem) -> Permutation:
    """The built-in ``"weight"`` method of `cipm.align` (data-free)."""
    c = problem.config
    return weight_matching(
        problem.state_a,
        problem.state_b,
        problem.graph,
        seed=c.seed,
        max_sweeps=c.max_sweeps,
        restarts=c.restarts,
    )


def assign(score: torch.Tensor) -> torch.Tensor:
    """perm[i] = the B unit assigned to A's unit i, maximizing the total score."""
    from scipy.optimize import linear_sum_assignment  # scipy.optimize: ~0.3 s, at first use

    _, cols = linear_sum_assignment(score.detach().cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)
