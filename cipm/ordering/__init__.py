"""Orders of units: canonical form (one order, whatever order units came in), and
reorganization (correlated units contiguous) with partitions into blocks. Methods of both are
registries (`cipm_canonical_methods`, `cipm_reorganize_methods`)."""

from cipm.ordering.blocks import Partition, partition, split_order
from cipm.ordering.canonical import canonical_order, canonical_permutation, canonicalize
from cipm.ordering.heatmap import plot_correlation
from cipm.ordering.methods import canonical_methods, reorganize_methods
from cipm.ordering.problem import CanonicalMethod, OrderProblem, ReorganizeMethod
from cipm.ordering.seriation import diagonality, reorganize, seriate

__all__ = [
    "CanonicalMethod",
    "OrderProblem",
    "Partition",
    "ReorganizeMethod",
    "canonical_methods",
    "canonical_order",
    "canonical_permutation",
    "canonicalize",
    "diagonality",
    "partition",
    "plot_correlation",
    "reorganize",
    "reorganize_methods",
    "seriate",
    "split_order",
]
