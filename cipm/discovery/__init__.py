"""Symmetry discovery: export a model, give every dimension a symbolic axis, let each op's
rule state which axes are the same, and solve by unification into a `SymmetryGraph`."""

from cipm.discovery.rules import ModuleGroup
from cipm.discovery.tracer import trace

__all__ = ["ModuleGroup", "trace"]
