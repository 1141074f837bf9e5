"""Pruning sizes that keep every layer of a role equally wide.

A model family whose config records one width per role (one hidden size and one head count
for all layers, as Hugging Face configs do) cannot rebuild a pruned model whose layers kept
different numbers of units. `uniform_sizes` turns a ``sizes=`` request for `cipm.prune` into
one where the groups that play the same role in every layer (same name but for the layer
index, same kind and size) keep the same number of units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cipm.errors import CipmError
from cipm.graph.parts import PermGroup
from cipm.graph.symmetry import SymmetryGraph

__all__ = ["role", "uniform_sizes"]

_INDEX = re.compile(r"(?<=\.)\d+(?=[.:])")


def role(group: PermGroup) -> tuple[str, str, int]:
    """What a group is in every layer: its name with layer indices replaced by ``*``
    (``"encoder.layer.*.intermediate.dense:hidden"``), its kind and its size."""
    return _INDEX.sub("*", group.name), group.kind.value, group.size


def uniform_sizes(graph: SymmetryGraph, sizes: Mapping[str, int]) -> dict[str, int]:
    """`sizes` (units to keep per group name) made the same across layers: every group whose
    role (see `role`) a named group has keeps the largest number asked for that role.

    Args:
        graph: the symmetry graph of the model to prune.
        sizes: units to keep per group name, as for `cipm.prune(..., sizes=)`.

    Returns:
        A ``sizes=`` mapping for `cipm.prune` naming every group of those roles.

    Raises:
        CipmError: a name is not a group of `graph`.

    Example (two blocks whose hidden layers are ``blocks.0.0`` and ``blocks.2.0``):
        >>> from torch.nn import Linear, ReLU, Sequential
        >>> block = lambda: Sequential(Linear(4, 8), ReLU())
        >>> blocks = Sequential(block(), Linear(8, 4), block(), Linear(8, 2))
        >>> net = Sequential()
        >>> net.add_module("blocks", blocks)
        >>> g = cipm.trace(net.eval(), torch.randn(2, 4))
        >>> cipm.pruning.uniform_sizes(g, {"blocks.0.0:hidden": 3, "blocks.2.0:hidden": 5})
        {'blocks.0.0:hidden': 5, 'blocks.2.0:hidden': 5}
    """
    names = {g.name: g for g in graph.groups}
    unknown = sorted(set(sizes) - set(names))
    if unknown:
        raise CipmError(f"no groups {unknown} in the graph of {graph.model}")
    wanted: dict[tuple[str, str, int], int] = {}
    for name, units in sizes.items():
        key = role(names[name])
        wanted[key] = max(wanted.get(key, 0), int(units))
    return {g.name: wanted[role(g)] for g in graph.groups if role(g) in wanted}
