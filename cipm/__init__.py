"""cipm: find the permutation symmetries of any PyTorch model automatically, and use them."""

from cipm.alignment.dispatch import align, align_many
from cipm.discovery.tracer import trace
from cipm.errors import (
    CipmError,
    CipmWarning,
    PermutationError,
    PluginError,
    RuleError,
    TraceError,
    UnsupportedOpError,
)
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import GroupKind, Member, PermGroup, Site, SymmetryGraph, TensorAxis
from cipm.hooks.hookspecs import hookimpl
from cipm.hooks.manager import get_plugin_manager, list_plugins
from cipm.merging.average import interpolate, merge, reset_batchnorm
from cipm.merging.connectivity import BarrierCurve, barrier, plot_barriers
from cipm.merging.renormalize import repair
from cipm.ordering.canonical import canonical_permutation, canonicalize
from cipm.ordering.seriation import Partition, diagonality, partition, plot_correlation, reorganize
from cipm.pruning.structured import prune
from cipm.statistics.collection import collect, collect_cross
from cipm.statistics.corrgraph import bipartite_graph, correlation_graph, network_graph
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics
from cipm.tensors.modify import permute

__version__ = "0.1.0"

__all__ = [
    "BarrierCurve",
    "CipmError",
    "CipmWarning",
    "CrossStatistics",
    "GroupKind",
    "GroupStatistics",
    "Member",
    "Partition",
    "PermGroup",
    "Permutation",
    "PermutationError",
    "PluginError",
    "RuleError",
    "Site",
    "Statistics",
    "SymmetryGraph",
    "TensorAxis",
    "TraceError",
    "UnsupportedOpError",
    "align",
    "align_many",
    "barrier",
    "bipartite_graph",
    "canonical_permutation",
    "canonicalize",
    "collect",
    "collect_cross",
    "correlation_graph",
    "diagonality",
    "get_plugin_manager",
    "hookimpl",
    "interpolate",
    "list_plugins",
    "merge",
    "network_graph",
    "partition",
    "permute",
    "plot_barriers",
    "plot_correlation",
    "prune",
    "reorganize",
    "repair",
    "reset_batchnorm",
    "trace",
]
