"""cipm: find the permutation symmetries of any PyTorch model automatically, and use them.

The package face: it only re-exports. The subpackages are the architecture::

    discovery/   trace a model: symbolic axes, op rules, unification -> a SymmetryGraph
    graph/       the symmetry graph, layouts of tensor dims, permutations, JSON
    tensors/     reading units out of tensors, permuting, mapping, resizing models
    statistics/  activations at group sites, float64 moments, correlation graphs
    alignment/   re-basin: weight/activation/Sinkhorn/STE matching (methods are plugins)
    merging/     averages, BatchNorm reset, REPAIR, loss barriers
    federated/   matched averaging of clients, a Flower strategy (Flower loaded lazily)
    exporting/   ONNX, safetensors, Hugging Face folders (formats are plugins), policies
    pruning/     which units to keep, how to fold the rest, smaller models
    ordering/    canonical form, reorganization, partitions
    meta/        the meta-analysis network: learned policies (torch-geometric, loaded lazily)
    hooks/       hook specifications and the plugin manager
    testing/     example models and data (not the core)
"""

from cipm import federated, meta
from cipm.alignment import AlignConfig, AlignProblem, align, align_many, align_methods
from cipm.discovery import trace
from cipm.errors import (
    CipmError,
    CipmWarning,
    PermutationError,
    PluginError,
    RuleError,
    TraceError,
    UnsupportedOpError,
)
from cipm.exporting import export, exporters, read_policy
from cipm.graph import GroupKind, Member, PermGroup, Permutation, Site, SymmetryGraph, TensorAxis
from cipm.hooks import get_plugin_manager, hookimpl, list_plugins
from cipm.merging import (
    BarrierCurve,
    barrier,
    interpolate,
    merge,
    plot_barriers,
    repair,
    reset_batchnorm,
)
from cipm.meta import MetaConfig
from cipm.ordering import (
    Partition,
    canonical_permutation,
    canonicalize,
    diagonality,
    partition,
    plot_correlation,
    reorganize,
    split_order,
)
from cipm.pruning import KeptWhole, PruneReport, prune, pruning_report
from cipm.statistics import (
    CrossStatistics,
    GroupStatistics,
    Statistics,
    bipartite_graph,
    collect,
    collect_cross,
    correlation_graph,
    network_graph,
)
from cipm.tensors import permute

__version__ = "0.1.0"

__all__ = [
    "AlignConfig",
    "AlignProblem",
    "BarrierCurve",
    "CipmError",
    "CipmWarning",
    "CrossStatistics",
    "GroupKind",
    "GroupStatistics",
    "KeptWhole",
    "Member",
    "MetaAnalyzer",
    "MetaConfig",
    "Partition",
    "PermGroup",
    "Permutation",
    "PermutationError",
    "PluginError",
    "PruneReport",
    "RuleError",
    "Site",
    "Statistics",
    "SymmetryGraph",
    "TensorAxis",
    "TraceError",
    "UnsupportedOpError",
    "align",
    "align_many",
    "align_methods",
    "barrier",
    "bipartite_graph",
    "canonical_permutation",
    "canonicalize",
    "collect",
    "collect_cross",
    "correlation_graph",
    "diagonality",
    "export",
    "exporters",
    "federated",
    "get_plugin_manager",
    "hookimpl",
    "interpolate",
    "list_plugins",
    "merge",
    "meta",
    "network_graph",
    "partition",
    "permute",
    "plot_barriers",
    "plot_correlation",
    "prune",
    "pruning_report",
    "read_policy",
    "reorganize",
    "repair",
    "reset_batchnorm",
    "split_order",
    "trace",
]


def __getattr__(name: str) -> object:
    # the meta-analysis network imports torch-geometric: only when it is asked for
    if name == "MetaAnalyzer":
        return meta.MetaAnalyzer
    raise AttributeError(f"module 'cipm' has no attribute {name!r}")
