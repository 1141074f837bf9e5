"""Pruning sizes a model family's config can describe: every layer of a role the same width.

A Hugging Face config holds one ``intermediate_size`` and one head count for all layers, so a
pruned model whose layers kept different numbers of units cannot be saved with a config that
rebuilds it. `uniform_sizes` turns a ``sizes=`` request for `cipm.prune` into one where the
groups that play the same role in every layer (same name but for the layer index, same kind
and size) keep the same number of units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cipm.errors import CipmError
from cipm.graph.symmetry import PermGroup, SymmetryGraph

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

    Example:
        >>> asked = {"h.0.mlp.c_fc:hidden": 24, "h.1.mlp.c_fc:hidden": 40}  # doctest: +SKIP
        >>> sizes = cipm.exporting.uniform_sizes(graph, asked)  # both 40  # doctest: +SKIP
        >>> small = cipm.prune(model, graph, sizes=sizes, method="magnitude")  # doctest: +SKIP
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
