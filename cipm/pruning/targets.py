"""What to prune: how many units each group keeps, and which groups can lose units at all."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from cipm.errors import CipmError
from cipm.graph.parts import GroupKind, PermGroup
from cipm.graph.symmetry import SymmetryGraph

__all__ = ["PRUNABLE", "kinds_of", "targets"]

# kinds a global ratio prunes by default; the residual stream is pruned when named
PRUNABLE = (GroupKind.HIDDEN, GroupKind.CHANNELS, GroupKind.HEADS)


def targets(
    graph: SymmetryGraph,
    ratio: float | None,
    sizes: Mapping[str, int],
    kinds: tuple[GroupKind, ...],
) -> dict[str, int]:
    """Units to keep per group that loses any.

    Raises:
        CipmError: neither `ratio` nor `sizes`, a ratio outside [0, 1), an unknown or
            unprunable group, or a size that would leave a group empty or exceeds it.
    """
    if not isinstance(sizes, Mapping):
        raise CipmError(f"sizes must map group names to units, got {type(sizes).__name__}")
    if ratio is None and not sizes:
        raise CipmError("say how much to prune: ratio=... (a fraction) or sizes={group: units}")
    if ratio is not None and (not isinstance(ratio, int | float) or isinstance(ratio, bool)):
        raise CipmError(f"ratio must be a number in [0, 1), got {ratio!r}")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise CipmError(f"ratio must be in [0, 1), got {ratio}")
    names = {g.name for g in graph}
    kept: dict[str, int] = {}
    if ratio is not None:
        kept = _by_ratio(graph, ratio, kinds)
    for name, k in sizes.items():
        if name not in names:
            raise CipmError(
                f"'{name}' is not a permutation group of {graph.model}: its axes are fixed "
                f"(model inputs/outputs) or it does not exist; groups are {sorted(names)}"
            )
        if not isinstance(k, int) or isinstance(k, bool):
            raise CipmError(f"units to keep of group '{name}' must be a whole number, got {k!r}")
        group = graph[name]
        why = _unprunable(graph, group)
        if why is not None:
            raise CipmError(f"group '{name}' cannot be pruned: {why}")
        if not 1 <= int(k) <= group.size:
            raise CipmError(
                f"cannot keep {k} units of group '{name}' ({group.size} units): "
                + ("that would leave it empty" if int(k) < 1 else "it has fewer")
            )
        kept[name] = int(k)
    return {n: k for n, k in kept.items() if k < graph[n].size}


def _by_ratio(graph: SymmetryGraph, ratio: float, kinds: tuple[GroupKind, ...]) -> dict[str, int]:
    """Units each group of `kinds` keeps so that `ratio` of what a user counts goes. A group
    nested in one of its own kind (grouped-query attention's query heads within their
    key/value head) is counted with it: ``ratio=0.5`` keeps half the query heads, not half
    of each level (a quarter). The levels' sizes are those whose product is nearest the
    target (the larger on a tie), then with the fewest outer units: whole key/value heads
    go, their query heads with them."""
    prunable = [g for g in graph if g.kind in kinds and _unprunable(graph, g) is None]
    names = {g.name for g in prunable}
    inner = {g.within: g for g in prunable if g.within in names and graph[g.within].kind == g.kind}
    nested = {g.name for g in inner.values()}
    kept: dict[str, int] = {}
    for g in prunable:
        if g.name in nested:
            continue  # sized with the group it lies within
        chain = [g]
        while chain[-1].name in inner:
            chain.append(inner[chain[-1].name])
        sizes = [c.size for c in chain]
        target = math.prod(sizes) * (1.0 - ratio)
        if len(chain) == 1:
            kept[g.name] = max(1, round(target))
            continue
        best = min(
            itertools.product(*(range(1, n + 1) for n in sizes)),
            key=lambda ks: (abs(math.prod(ks) - target), -math.prod(ks), ks),
        )
        kept.update((c.name, k) for c, k in zip(chain, best, strict=True))
    return kept


def kinds_of(kinds: tuple[GroupKind | str, ...]) -> tuple[GroupKind, ...]:
    """`kinds` as GroupKinds; an unknown one is a CipmError listing the kinds there are."""
    try:
        return tuple(GroupKind(k) for k in kinds)
    except ValueError:
        known = [k.value for k in GroupKind]
        raise CipmError(f"unknown group kinds in {kinds!r}; kinds are {known}") from None


def _unprunable(graph: SymmetryGraph, group: PermGroup) -> str | None:
    """Why a group can't lose units, or None if it can."""
    if group.kind == GroupKind.WITHIN_HEAD:
        return (
            "it holds dims within attention heads, and pruning them would change the attention "
            f"scale; prune whole heads (group '{group.within}') instead"
        )
    inner = [g.name for g in graph if g.within == group.name]
    if inner and group.kind != GroupKind.HEADS:
        return (
            f"its units are blocks of the units of '{inner[0]}' (such as GroupNorm groups), "
            "whose count the layer records; prune the units within the blocks instead"
        )
    return None
