"""cipm: find the permutation symmetries of any PyTorch model automatically, and use them.

The package face: it only re-exports. The subpackages are the architecture::

    discovery/   trace a model: symbolic axes, op rules, unification -> a SymmetryGraph
    graph/       the symmetry graph, layouts of tensor dims, permutations, JSON
    tensors/     reading units out of tensors, permuting, mapping, resizing models
    statistics/  activations at group sites, float64 moments that merge exactly
    alignment/   re-basin: weight/activation/Sinkhorn/STE matching (methods are plugins)
    merging/     averages, BatchNorm reset, REPAIR, loss barriers
    federated/   matched averaging of clients, a Flower strategy (Flower loaded lazily)
    exporting/   ONNX, safetensors, Hugging Face folders (formats are plugins), policies
    pruning/     which units to keep, how to fold the rest, smaller models
    ordering/    canonical form, reorganization, partitions
    meta/        the meta-analysis network: learned policies (torch-geometric, loaded lazily)
    hooks/       hook specifications and the plugin manager
    plugin       the plugin contract: every type a hook takes or returns (for plugin authors)
    plugins/     the built-in plugins: op rules, resizers, exporters (architecture knowledge)
    examples/    the built-in example models and data (not the core)
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
    UnknownGroupError,
    UnsupportedOpError,
)
from cipm.exporting import export, exporters, read_policy
from cipm.federated.config import MatchConfig
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
from cipm.pruning import (
    KeptWhole,
    PruneConfig,
    Pruned,
    PruneMethod,
    PruneReport,
    prune,
    prune_methods,
)
from cipm.statistics import (
    CollectConfig,
    CrossStatistics,
    GroupStatistics,
    Statistics,
    collect,
    collect_cross,
)
from cipm.tensors import permute
from cipm.version import __version__ as __version__

__all__ = [
    "AlignConfig",
    "AlignProblem",
    "BarrierCurve",
    "CipmError",
    "CipmWarning",
    "CollectConfig",
    "CrossStatistics",
    "GroupKind",
    "GroupStatistics",
    "KeptWhole",
    "MatchConfig",
    "Member",
    "MetaAnalyzer",
    "MetaConfig",
    "Partition",
    "PermGroup",
    "Permutation",
    "PermutationError",
    "PluginError",
    "PruneConfig",
    "PruneMethod",
    "PruneReport",
    "Pruned",
    "RuleError",
    "Site",
    "Statistics",
    "SymmetryGraph",
    "TensorAxis",
    "TraceError",
    "UnknownGroupError",
    "UnsupportedOpError",
    "align",
    "align_many",
    "align_methods",
    "barrier",
    "canonical_permutation",
    "canonicalize",
    "collect",
    "collect_cross",
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
    "partition",
    "permute",
    "plot_barriers",
    "plot_correlation",
    "prune",
    "prune_methods",
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
