"""Structured pruning through the symmetry graph: choose the units each group keeps, fold the
removed ones into them, and rebuild a physically smaller model of the same class."""

from cipm.pruning.structured import GroupPlan, prune, prune_plan

__all__ = ["GroupPlan", "prune", "prune_plan"]
