"""The machinery of weight matching's coordinate descent, shared by `weight_matching` and
the windowed refinement: which tensors each group lives in (`Plan`), B permuted by the
permutation so far and the assignment cost of one group (`Descent`), and a solve counter.

For one group, with the others held, maximizing sum_W <W_A, P(W_B)> is a linear assignment on
C[i, j] = A's unit-i slices dotted with B's unit-j slices over every tensor the group lives in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from cipm.graph.layout import Leaf, Path, Product, index_map, node_at, occurrences
from cipm.graph.parts import TensorAxis
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.tensors.units import pair_matrix, unit_matrix

__all__ = ["EVIDENCE", "Descent", "DescentStats", "Plan", "assign", "matched_weights"]

# how much activation evidence outweighs the (normalized) weight cost when both are given
EVIDENCE = 1e3


@dataclass
class DescentStats:
    """What a coordinate descent did, filled in by the function it is passed to (summed over
    restarts): `solves`, linear assignments solved (a windowed pass counts one per window);
    `sweeps`, passes over the groups, the last being the one that changed nothing (or the
    `max_sweeps`-th)."""

    solves: int = 0
    sweeps: int = 0


class Plan:
    """Which tensor axes each group lives in, and which groups change each other's cost."""

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
        stats: DescentStats | None = None,
    ) -> dict[str, torch.Tensor]:
        """Coordinate descent to a fixed point (or `max_sweeps`); the permutation per group."""
        run = Descent(self, state_a, state_b, start)
        names = list(run.perm)
        stale = set(names)  # groups whose cost may have changed since they were last solved
        gen = torch.Generator().manual_seed(seed)
        stats = stats if stats is not None else DescentStats()
        for sweep in range(max_sweeps):
            stats.sweeps += 1
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
                stats.solves += 1
                if not torch.equal(new, run.perm[name]):
                    run.update(name, new)
                    changed = True
                    stale |= self.neighbours[name]
            if not changed:
                break
        return run.perm


class Descent:
    """State of one coordinate descent: the permutation so far and B permuted by it."""

    def __init__(
        self,
        plan: Plan,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
        start: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.plan, self.state_b = plan, state_b
        self.perm = {g.name: torch.arange(g.size) for g in plan.graph}
        self.b = {key: state_b[key].detach() for key in plan.by_key}  # B under self.perm
        self.a = {key: state_a[key].detach() for key in plan.by_key}
        self._a_units: dict[tuple[str, int, str, int], torch.Tensor] = {}
        self._a_windowed: dict[tuple[str, int, str, int, int], torch.Tensor] = {}
        if start is not None:
            for name in self.perm:
                self.update(name, start[name])

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

    def window_costs(self, name: str, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """`cost(name)[S][:, S]` for each window S of positions (disjoint index tensors),
        without the rest of the matrix: O(n * |S|) per window and tensor row instead of
        O(n^2). A group nested with another (heads over head_dim) takes the full cost."""
        if name in self.plan.inner:
            full = self.cost(name)
            return [full[s][:, s] for s in windows]
        same: dict[int, list[int]] = {}  # windows of one length are scored in one batch
        for i, s in enumerate(windows):
            same.setdefault(len(s), []).append(i)
        costs: list[torch.Tensor] = [torch.empty(0)] * len(windows)
        for length, which in same.items():
            idx = torch.cat([windows[i] for i in which])
            batch = torch.zeros(len(which), length, length, dtype=torch.float64)
            for axis in self.plan.axes_of[name]:
                for k in range(len(occurrences(axis.layout, name))):
                    a3 = self._a_windows(axis, name, k, idx).reshape(-1, len(which), length)
                    b = unit_matrix(self.b[axis.key], axis.dim, axis.layout, name, k)
                    b3 = b.to(a3.dtype).index_select(1, idx).reshape(len(b), len(which), length)
                    batch += torch.einsum("dki,dkj->kij", a3, b3).to(torch.float64)
            for i, cost in zip(which, batch, strict=True):
                costs[i] = cost
        return costs

    def _a_windows(self, axis: TensorAxis, name: str, k: int, idx: torch.Tensor) -> torch.Tensor:
        """A's unit matrix with its columns in the order `idx` (kept: A does not move)."""
        key = (axis.key, axis.dim, name, k, hash(idx.numpy().tobytes()))
        if key not in self._a_windowed:
            self._a_windowed[key] = self._a_unit(axis, name, k).index_select(1, idx)
        return self._a_windowed[key]

    def _a_unit(self, axis: TensorAxis, name: str, k: int) -> torch.Tensor:
        key = (axis.key, axis.dim, name, k)
        if key not in self._a_units:
            self._a_units[key] = unit_matrix(self.a[axis.key], axis.dim, axis.layout, name, k)
        return self._a_units[key]


def matched_weights(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    perm: Mapping[str, torch.Tensor] | None = None,
) -> float:
    """Weight matching's objective: the sum over the graph's tensors of <W_A, P(W_B)>
    (P = identity when `perm` is None)."""
    total = 0.0
    for key, axes in graph.by_key.items():
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


def assign(score: torch.Tensor) -> torch.Tensor:
    """perm[i] = the B unit assigned to A's unit i, maximizing the total score."""
    from scipy.optimize import linear_sum_assignment  # scipy.optimize: ~0.3 s, at first use

    _, cols = linear_sum_assignment(score.detach().cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)
