"""cipm: find the permutation symmetries of any PyTorch model automatically, and use them."""

from cipm.errors import (
    CipmError,
    CipmWarning,
    PermutationError,
    PluginError,
    RuleError,
    TraceError,
    UnsupportedOpError,
)
from cipm.graph import GroupKind, Member, PermGroup, Site, SymmetryGraph, TensorAxis
from cipm.hookspecs import hookimpl
from cipm.modify import permute
from cipm.permutation import Permutation
from cipm.plugins import get_plugin_manager, list_plugins
from cipm.tracer import trace

__version__ = "0.1.0"

__all__ = [
    "CipmError",
    "CipmWarning",
    "GroupKind",
    "Member",
    "PermGroup",
    "Permutation",
    "PermutationError",
    "PluginError",
    "RuleError",
    "Site",
    "SymmetryGraph",
    "TensorAxis",
    "TraceError",
    "UnsupportedOpError",
    "get_plugin_manager",
    "hookimpl",
    "list_plugins",
    "permute",
    "trace",
]
