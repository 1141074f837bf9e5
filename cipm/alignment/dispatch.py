"""`cipm.align`: the permutation that lines model B's units up with model A's.

Weight matching (Git Re-Basin, generalized to any symmetry graph; see `cipm.matching`).
Activation matching assigns each group on the cross-correlation of the two models' units on
data (`cipm.collect_cross`), with weights breaking ties. MergeMany aligns many models into one
unit order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

from cipm.alignment.sinkhorn import sinkhorn_matching
from cipm.alignment.ste import ste_matching
from cipm.alignment.weight import weight_matching
from cipm.errors import CipmError, PermutationError
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import GroupKind, SymmetryGraph
from cipm.statistics.collection import collect_cross, model_inputs
from cipm.tensors.modify import fitted_tensors, permute_state

__all__ = ["align", "align_many"]

Method = Literal["weight", "activation", "ste", "sinkhorn"]


def align(
    model_b: torch.nn.Module,
    model_a: torch.nn.Module,
    graph: SymmetryGraph,
    *,
    method: Method = "weight",
    data: Iterable[Any] | None = None,
    via: torch.nn.Module | None = None,
    seed: int = 0,
    max_sweeps: int = 100,
    restarts: int = 1,
    progress: bool = False,
) -> Permutation:
    """The permutation `p` such that ``cipm.permute(model_b, p)`` lines up with `model_a`.

    Args:
        model_b: the model to permute. model_a: the reference. Both must fit `graph`.
        method: ``"weight"`` (weight matching, data-free), ``"sinkhorn"`` (relaxed to soft
            permutations, annealed, rounded, then polished by weight matching; data-free,
            slower), ``"activation"`` (needs `data`:
            an iterable of batches as for `cipm.collect`) or ``"ste"`` (straight-through
            estimator on the midpoint's cross-entropy; `data` yields (inputs, targets);
            `cipm.ste.ste_matching` takes another loss and step count). Activation
            correlations decide every group observed on its own; nested groups (attention
            heads and the dims within them, GroupNorm groups and the channels within them),
            whose activations only compare once the other is aligned, and ties (dead units)
            go by weights.
        via: a third model to align through ("indirect alignment", seed 000 section 5.3):
            B is aligned to `via`, `via` to A, and the two permutations are composed, so
            B and A never meet (as when two clients only share a reference model).
        seed: order of groups in coordinate descent.
        max_sweeps: bound on coordinate-descent sweeps (it normally stops at a fixed point).
        restarts: group orders to try (see `weight_matching`).

    Raises:
        CipmError: a model does not fit the graph (naming the group), non-finite weights,
            an unknown method, or activation matching without data.
    """
    if via is not None:

        def direct(b: torch.nn.Module, a: torch.nn.Module) -> Permutation:
            return align(
                b,
                a,
                graph,
                method=method,
                data=data,
                seed=seed,
                max_sweeps=max_sweeps,
                restarts=restarts,
                progress=progress,
            )

        return direct(model_b, via).compose(direct(via, model_a))
    state_a = _state(model_a, graph, "model_a")
    state_b = _state(model_b, graph, "model_b")
    if method == "weight":
        return weight_matching(
            state_a, state_b, graph, seed=seed, max_sweeps=max_sweeps, restarts=restarts
        )
    if method == "sinkhorn":
        return sinkhorn_matching(state_a, state_b, graph, seed=seed)
    if method not in ("activation", "ste"):
        raise CipmError(
            f"unknown alignment method {method!r}; use 'weight', 'sinkhorn', 'activation' or 'ste'"
        )
    if data is None:
        raise CipmError(f"{method} matching needs data: pass data=<iterable of batches>")
    if method == "ste":
        return ste_matching(model_a, model_b, graph, data, seed=seed)
    cross = collect_cross(model_a, model_b, graph, data, inputs=model_inputs, progress=progress)
    nesting = {g.within for g in graph} | {g.name for g in graph if g.within}
    evidence = {
        g.name: cross.corr(g.name)
        for g in graph
        if g.kind not in (GroupKind.HEADS, GroupKind.WITHIN_HEAD) and g.name not in nesting
    }
    return weight_matching(
        state_a,
        state_b,
        graph,
        seed=seed,
        max_sweeps=max_sweeps,
        restarts=restarts,
        evidence=evidence,
    )


def align_many(
    models: list[torch.nn.Module],
    graph: SymmetryGraph,
    *,
    seed: int = 0,
    max_rounds: int = 50,
) -> list[Permutation]:
    """MergeMany: one permutation per model that brings all of them into one unit order.

    Each model in turn is weight-matched to the mean of the others (as currently
    permuted), until a round changes nothing. The common order is model 0's: its
    permutation is the identity.

    Raises:
        CipmError: fewer than two models, or a model that does not fit the graph.
    """
    if len(models) < 2:
        raise CipmError(f"align_many needs at least two models, got {len(models)}")
    states = [_state(m, graph, f"models[{i}]") for i, m in enumerate(models)]
    perms = [graph.identity() for _ in models]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_rounds):
        changed = False
        for i in torch.randperm(len(models), generator=gen).tolist():
            others = [
                permute_state(state, perm)
                for j, (state, perm) in enumerate(zip(states, perms, strict=True))
                if j != i
            ]
            mean = {k: torch.stack([o[k].double() for o in others]).mean(0) for k in others[0]}
            new = weight_matching(mean, states[i], graph, seed=seed)
            if new != perms[i]:
                perms[i], changed = new, True
        if not changed:
            break
    to_first = perms[0].inverse()
    return [p.compose(to_first) for p in perms]


def _state(model: torch.nn.Module, graph: SymmetryGraph, which: str) -> dict[str, torch.Tensor]:
    try:
        tensors = fitted_tensors(model, graph)
    except PermutationError as e:
        raise CipmError(f"{which}: {e}") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CipmError(f"{which} has non-finite values in '{key}'; cannot align it")
    return tensors
