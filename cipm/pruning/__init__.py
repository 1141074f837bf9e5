"""Structured pruning through the symmetry graph: choose the units each group keeps, fold the
removed ones into them, and rebuild a physically smaller model of the same class."""

from cipm.pruning.fold import GroupPlan
from cipm.pruning.structured import METHODS, prune, prune_plan
from cipm.pruning.verify import KeptWhole, PruneReport, pruning_report

__all__ = [
    "METHODS",
    "GroupPlan",
    "KeptWhole",
    "PruneReport",
    "prune",
    "prune_plan",
    "pruning_report",
]
