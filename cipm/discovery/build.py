"""From solved atoms to a `SymmetryGraph`: layouts, groups, names, kinds, sites."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from cipm.discovery.axes import Atom, AxisSolver
from cipm.discovery.nodes import module_path
from cipm.discovery.rules import Axes
from cipm.graph.layout import Layout, Leaf, Product, Sum, groups_in, placements, relabel
from cipm.graph.parts import GroupKind, Member, OutputAxis, PermGroup, Site, TensorAxis
from cipm.graph.symmetry import SymmetryGraph

__all__ = ["build_graph"]


def build_graph(
    model_name: str,
    solver: AxisSolver,
    params: dict[str, Axes],
    activations: list[tuple[torch.fx.Node, list[Axes | None]]],
    user_outputs: list[Axes | None],
    consumed: Collection[tuple[str, int]] = (),
    declared: Mapping[int, tuple[str, GroupKind]] | None = None,
) -> SymmetryGraph:
    """Assemble the symmetry graph of a solved trace.

    A group is a solved class that is a leaf (not cut further), not fixed, has more than one
    unit, lives in at least one parameter or buffer, and is seen in at least one activation.
    `declared` names classes that a module's declaration makes one group (its name and kind),
    fixed or not: the classes of one name are one group.
    """
    fixed, tags = solver.solve()
    declared = declared or {}

    def layout(atom: Atom) -> Layout:
        root = solver.find(atom)
        d = solver.decomposition(root)
        if d is None and root in declared:
            return Leaf(solver.size(root), declared[root][0])
        if d is None:
            free = root not in fixed and solver.size(root) > 1
            return Leaf(solver.size(root), str(root) if free else None)
        children = tuple(layout(p) for p in d.parts)
        return Product(children) if d.kind == "product" else Sum(children)

    param_axes = [
        TensorAxis(key, dim, layout(a))
        for key, axes in params.items()
        for dim, a in enumerate(axes)
    ]
    seen: dict[str, list[tuple[torch.fx.Node, int, Layout]]] = {}
    for node, results in activations:
        if len(results) != 1:  # tuple outputs are observed through their getitem nodes
            continue
        for dim, a in enumerate(results[0] or ()):
            tree = layout(a)
            for root in dict.fromkeys(groups_in(tree)):
                seen.setdefault(root, []).append((node, dim, tree))

    members: dict[str, list[Member]] = {}
    within: dict[str, str] = {}
    for axis in param_axes:
        consumes = (axis.key, axis.dim) in consumed
        for root, unit, outer in placements(axis.layout):
            if root in seen:
                members.setdefault(root, []).append(Member(axis.key, axis.dim, unit, consumes))
                if outer in seen:
                    within.setdefault(root, outer)

    sizes = {name: solver.size(r) for r, (name, _) in declared.items()}
    kinds = dict(declared.values())
    for root in members:
        if root not in kinds:
            sizes[root] = solver.size(int(root))
            kinds[root] = GroupKind.from_tags(tags.get(int(root), frozenset()))
    names = _names(members, kinds, within, {name for name, _ in declared.values()})
    groups = tuple(
        PermGroup(
            name=names[root],
            size=sizes[root],
            kind=kinds[root],
            members=tuple(dict.fromkeys(ms)),
            sites=tuple(
                Site(
                    node.name,
                    module_path(node),
                    str(node.target),
                    dim,
                    None if isinstance(tree, Leaf) else _rename(tree, names),
                    _samples(node, dim),
                )
                for node, dim, tree in seen[root]
            ),
            within=names.get(within.get(root, "")),
        )
        for root, ms in members.items()
    )
    tensor_axes = tuple(
        TensorAxis(a.key, a.dim, _rename(a.layout, names))
        for a in param_axes
        if any(g in names for g in groups_in(a.layout))
    )
    output_axes = tuple(
        OutputAxis(i, dim, _rename(layout(a), names))
        for i, axes in enumerate(user_outputs)
        for dim, a in enumerate(axes or ())
        if any(g in names for g in groups_in(layout(a)))
    )
    return SymmetryGraph(model_name, groups, tensor_axes, output_axes)


def _names(
    members: dict[str, list[Member]],
    kinds: dict[str, GroupKind],
    within: dict[str, str],
    declared: set[str],
) -> dict[str, str]:
    """Readable names: the module of a group's first member, and its kind (a declared
    group is already named after its module). Heads within heads are ``query_heads``: in
    grouped-query attention, the query heads that share one key/value head (``heads``)."""
    names = {root: root for root in members if root in declared}
    taken = set(names.values())
    for root, ms in members.items():
        if root in declared:
            continue
        module = ms[0].key.rsplit(".", 1)[0] if "." in ms[0].key else ms[0].key
        nested = kinds[root] == GroupKind.HEADS == kinds.get(within.get(root, ""))
        base = f"{module}:{'query_heads' if nested else kinds[root].value}"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}#{n}", n + 1
        taken.add(name)
        names[root] = name
    return names


def _rename(layout: Layout, names: dict[str, str]) -> Layout:
    return relabel(layout, lambda leaf: Leaf(leaf.size, names.get(leaf.group or "")))


def _samples(node: torch.fx.Node, dim: int) -> int:
    """Samples per unit an activation holds: its elements over the size of `dim`."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or not val.shape[dim]:
        return 0
    return val.numel() // val.shape[dim]
