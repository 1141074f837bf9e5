"""The registries of ordering methods: `cipm_canonical_methods` (for `cipm.canonicalize`)
and `cipm_reorganize_methods` (for `cipm.reorganize` and `cipm.partition`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import method_of, plugin_table
from cipm.ordering.problem import CanonicalMethod, ReorganizeMethod

__all__ = ["canonical_method", "canonical_methods", "reorganize_method", "reorganize_methods"]


def canonical_methods(blocked_plugins: Iterable[str] = ()) -> dict[str, CanonicalMethod]:
    """The canonical orders the plugins provide, by name."""
    return plugin_table("cipm_canonical_methods", "canonical method", blocked_plugins)


def reorganize_methods(blocked_plugins: Iterable[str] = ()) -> dict[str, ReorganizeMethod]:
    """The reorganization (seriation) methods the plugins provide, by name."""
    return plugin_table("cipm_reorganize_methods", "reorganize method", blocked_plugins)


def canonical_method(method: Any, graph: SymmetryGraph) -> CanonicalMethod:
    """The canonical method `method` names (or is)."""
    found: CanonicalMethod = method_of(
        "cipm_canonical_methods", "canonical method", method, graph.blocked_plugins
    )
    return found


def reorganize_method(method: Any, graph: SymmetryGraph) -> ReorganizeMethod:
    """The reorganize method `method` names (or is)."""
    found: ReorganizeMethod = method_of(
        "cipm_reorganize_methods", "reorganize method", method, graph.blocked_plugins
    )
    return found
