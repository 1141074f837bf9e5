"""Structured pruning through the symmetry graph: choose the units each group keeps, fold the
removed ones into them, and rebuild a physically smaller model of the same class."""

from cipm.pruning.fold import GroupPlan
from cipm.pruning.problem import PruneConfig, PruneMethod, PruneProblem
from cipm.pruning.result import KeptWhole, Pruned, PruneReport
from cipm.pruning.structured import prune, prune_methods, prune_plan
from cipm.pruning.targets import PRUNABLE
from cipm.pruning.uniform import uniform_sizes

__all__ = [
    "PRUNABLE",
    "GroupPlan",
    "KeptWhole",
    "PruneConfig",
    "PruneMethod",
    "PruneProblem",
    "PruneReport",
    "Pruned",
    "prune",
    "prune_methods",
    "prune_plan",
    "uniform_sizes",
]
