"""What an ordering method is given: the model's tensors and statistics, checked once, and
the groups to order, and what ordering methods are. `cipm.canonicalize` and `cipm.reorganize` /
`cipm.partition` look their ``method=`` up in registries (`cipm.ordering.methods`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.statistics.group import Statistics
from cipm.tensors.fitted import fitted_tensors

__all__ = [
    "CanonicalMethod",
    "OrderProblem",
    "ReorganizeMethod",
    "order_problem",
]


@dataclass(frozen=True)
class OrderProblem:
    """Order the units of `groups`: the model, its tensors (fitted to the graph), its
    statistics if given. Methods take everything from here and never read the model again."""

    model: torch.nn.Module
    graph: SymmetryGraph
    tensors: Mapping[str, torch.Tensor]
    stats: Statistics | None
    groups: tuple[str, ...]

    def statistics(self, method: str) -> Statistics:
        """The statistics, for a method that cannot work without them."""
        if self.stats is None:
            raise CipmError(
                f"the '{method}' order reads statistics: pass stats=cipm.collect(model, graph, "
                "data)"
            )
        return self.stats


# a permutation of every group of the problem's graph
CanonicalMethod = Callable[[OrderProblem], Permutation]
# an order (indices) of each group in problem.groups
ReorganizeMethod = Callable[[OrderProblem], Mapping[str, torch.Tensor]]


def order_problem(
    model: torch.nn.Module,
    graph: SymmetryGraph | None,
    stats: Statistics | None,
    groups: Iterable[str] | None = None,
) -> OrderProblem:
    """An ordering request, checked once: `stats` (if given) are statistics of `model`, of
    `graph` (default: theirs), and `groups` (default: all) are groups of it.

    Raises:
        CipmError: statistics of another model or graph, a model that does not fit the
            graph, unknown groups.
    """
    if stats is not None and not isinstance(stats, Statistics):
        raise CipmError(f"expected cipm.collect statistics, got {type(stats).__name__}")
    if graph is None:
        if stats is None:
            raise CipmError("ordering needs a symmetry graph or statistics")
        graph = stats.graph
    elif stats is not None and stats.graph != graph:
        raise CipmError("the statistics were collected for another symmetry graph")
    if not isinstance(graph, SymmetryGraph):
        raise CipmError(f"expected a cipm.SymmetryGraph, got {type(graph).__name__}")
    tensors = fitted_tensors(model, graph) if stats is None else stats.check_model(model)
    return OrderProblem(model, graph, tensors, stats, _chosen(graph, groups))


def _chosen(graph: SymmetryGraph, groups: Iterable[str] | None) -> tuple[str, ...]:
    names = [g.name for g in graph]
    if groups is None:
        return tuple(names)
    if isinstance(groups, str | bytes) or not isinstance(groups, Iterable):
        raise CipmError(f"groups must be a list of group names, got {groups!r}")
    chosen = tuple(groups)
    unknown = [g for g in chosen if g not in names]
    if unknown:
        raise CipmError(f"unknown groups {unknown}; groups are {names}")
    return chosen
