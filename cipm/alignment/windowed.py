"""Windowed weight matching: refine an alignment by exact assignments inside windows of an
order (seed 002 §5.1's sparse, block-diagonal permutations).

Given a starting alignment of B onto A (co-canonicalization by learned scores puts units of
similar score at equal positions) and an order of A's units (those scores' ranks), each
group's units are cut into consecutive windows of that order and weight matching's
assignment is solved inside each window only, with every other group held; a second pass
does the same on windows shifted by half a window, so a unit can travel across a boundary.
Sweeps repeat over the groups until none changes. A window's cost is O(n * window) per row
of the tensors the group lives in (full weight matching's is O(n^2) per row, and its solve
O(n^3)); the objective never decreases, since each window's present assignment is one the
solver may choose.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.alignment.descent import Descent, DescentStats, Plan, assign, matched_weights
from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph

__all__ = ["DEFAULT_WINDOW", "windowed_matching", "windows_of"]

DEFAULT_WINDOW = 256


def windowed_matching(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    start: Mapping[str, torch.Tensor],
    *,
    order: Mapping[str, torch.Tensor] | None = None,
    window: int = DEFAULT_WINDOW,
    max_sweeps: int = 20,
    tol: float = 1e-4,
    stats: DescentStats | None = None,
) -> Permutation:
    """B's permutation onto A: `start` improved by assignments inside windows.

    Args:
        start: B's permutation onto A to refine (``start[g][i]``: the B unit at A's unit i).
        order: per group, A's units in the order whose consecutive runs are the windows
            (e.g. ranks of learned scores, highest first); default: A's own unit order.
        window: units per window (a group no larger is solved whole, as weight matching does).
        max_sweeps: bound on sweeps over the groups.
        tol: stop after a sweep that raised the matched weights sum_W <W_A, P(W_B)> by at
            most this fraction of their magnitude (0: only when a sweep changes nothing).
        stats: filled in with the window assignments solved and the sweeps run.

    Raises:
        CipmError: `window` below 2, or `start` / `order` not permutations of the groups.
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 2:
        raise CipmError(f"window must be a whole number >= 2, got {window!r}")
    if not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise CipmError(f"max_sweeps must be a whole number >= 1, got {max_sweeps!r}")
    first = Permutation(graph, start)
    ranked = Permutation(graph, order) if order is not None else Permutation.identity(graph)
    run = Descent(Plan(graph, {}), state_a, state_b, first)
    stats = stats if stats is not None else DescentStats()
    passes = {g.name: _passes(ranked[g.name], window) for g in graph}
    matched = matched_weights(state_a, state_b, graph, first)
    for _ in range(max_sweeps):
        stats.sweeps += 1
        changed, gain = (
            False,
            0.0,
        )  # gain: what this sweep added to the matched weights (every window's own gain)
        for group in graph:
            for windows in passes[group.name]:
                current = run.perm[group.name]
                new = current.clone()
                for s, cost in zip(windows, run.window_costs(group.name, windows), strict=True):
                    best = assign(cost)
                    if not torch.equal(best, torch.arange(len(s))):
                        new[s] = current[s][best]
                        gain += float(cost[torch.arange(len(s)), best].sum() - cost.trace())
                stats.solves += len(windows)
                if not torch.equal(new, current):
                    run.update(group.name, new)
                    changed = True
        matched += gain
        if not changed or gain <= tol * abs(matched):
            break
    return Permutation(graph, run.perm)


def windows_of(order: torch.Tensor, window: int, offset: int = 0) -> list[torch.Tensor]:
    """Consecutive runs of `order` of `window` units, the first `offset` long when
    0 < offset < window (the shifted pass); the last holds what is left."""
    cuts = list(range(offset if 0 < offset < window else window, len(order), window))
    return [run for run in torch.tensor_split(order, cuts) if len(run)]


def _passes(order: torch.Tensor, window: int) -> list[list[torch.Tensor]]:
    if len(order) <= window:
        return [[order]]
    return [windows_of(order, window), windows_of(order, window, window // 2)]
