"""cipm: find the permutation symmetries of any PyTorch model automatically, and use them."""

from cipm.align import align, align_many
from cipm.barrier import BarrierCurve, barrier, plot_barriers
from cipm.canonical import canonical_permutation, canonicalize
from cipm.collect import collect, collect_cross
from cipm.corrgraph import bipartite_graph, correlation_graph, network_graph
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
from cipm.merge import interpolate, merge, reset_batchnorm
from cipm.modify import permute
from cipm.permutation import Permutation
from cipm.plugins import get_plugin_manager, list_plugins
from cipm.prune import prune
from cipm.reorganize import Partition, diagonality, partition, plot_correlation, reorganize
from cipm.repair import repair
from cipm.statistics import CrossStatistics, GroupStatistics, Statistics
from cipm.tracer import trace

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
