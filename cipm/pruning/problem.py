"""What `cipm.prune` is asked and what a pruning method is given: the request validated once
at the boundary into a `PruneProblem`, and `PruneMethod`, the value of the
`cipm_prune_methods` registry (which units to keep, and whether the rest are folded in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cipm.batches import Inputs, model_inputs
from cipm.errors import CipmError
from cipm.graph.parts import GroupKind
from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.targets import PRUNABLE, kinds_of, targets
from cipm.statistics.group import Statistics
from cipm.tensors.fitted import fitted_tensors

__all__ = ["PruneConfig", "PruneMethod", "PruneProblem", "UnitScores", "prune_problem"]


@dataclass(frozen=True)
class PruneConfig:
    """How `cipm.prune` works, beyond what it prunes.

    Attributes:
        kinds: group kinds a ``ratio`` applies to (default hidden units, channels, heads).
        inputs: maps a batch of calibration data to model inputs (as in `cipm.collect`).
        example_inputs: inputs to check the pruned model on (default: those the graph was
            traced on); see `cipm.prune`.
        progress: a progress bar over the groups when pruning with calibration data.
    """

    kinds: tuple[GroupKind | str, ...] = PRUNABLE
    inputs: Inputs = model_inputs
    example_inputs: Any = None
    progress: bool = True

    def __post_init__(self) -> None:
        kinds_of(tuple(self.kinds))  # an unknown kind: a CipmError at once, naming the kinds


@dataclass(frozen=True)
class PruneProblem:
    """One pruning request, checked once: the model and its tensors (fitted to the graph),
    its statistics if given, the calibration data if given, and the units each target group
    keeps. Methods take everything from here and never read the model again."""

    model: torch.nn.Module
    graph: SymmetryGraph
    tensors: Mapping[str, torch.Tensor]
    stats: Statistics | None
    data: Iterable[Any] | None
    targets: Mapping[str, int]
    config: PruneConfig

    def statistics(self, method: str) -> Statistics:
        """The statistics, for a method that cannot work without them."""
        if self.stats is None:
            raise CipmError(
                f"prune method '{method}' needs statistics: pass cipm.collect(model, graph, data)"
            )
        return self.stats


UnitScores = Callable[[PruneProblem], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class PruneMethod:
    """How a group loses units: which it keeps and what happens to the rest.

    Attributes:
        scores: ``scores(problem)`` gives one score per unit of every target group (higher:
            kept first); None keeps the subset that explains the others best by least
            squares, chosen while folding.
        fold: fold the removed units into the kept ones by least squares (needs statistics,
            or calibration data); False drops them.
        needs_statistics: `scores` reads ``problem.stats`` (a caller without them collects
            them first, as the CLI does).
        description: one line for listings.
    """

    scores: UnitScores | None = None
    fold: bool = True
    needs_statistics: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.scores is None and not self.fold:
            raise CipmError("a prune method that does not fold must score the units (scores=)")

    def needs_data(self) -> bool:
        """Whether the method needs statistics or calibration data at all."""
        return self.fold or self.needs_statistics


def prune_problem(
    model: torch.nn.Module,
    stats: Statistics | SymmetryGraph,
    ratio: float | None,
    sizes: Mapping[str, int] | None,
    data: Iterable[Any] | None,
    config: PruneConfig,
) -> PruneProblem:
    """The request of a `cipm.prune` call, checked once.

    Raises:
        CipmError: statistics made from another model, neither statistics nor a graph, or
            an unsound ratio or size (see `cipm.pruning.targets`).
    """
    if isinstance(stats, Statistics):
        graph, tensors, statistics = stats.graph, stats.check_model(model), stats
    elif isinstance(stats, SymmetryGraph):
        graph, tensors, statistics = stats, fitted_tensors(model, stats), None
    else:
        raise CipmError(f"prune needs statistics or a symmetry graph, got {type(stats).__name__}")
    if not isinstance(config, PruneConfig):
        raise CipmError(f"config must be a cipm.PruneConfig, got {type(config).__name__}")
    kinds = kinds_of(tuple(config.kinds))
    kept = targets(graph, ratio, {} if sizes is None else sizes, kinds)
    return PruneProblem(model, graph, tensors, statistics, data, kept, config)
