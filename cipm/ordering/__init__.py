"""Orders of units: canonical form (one order, whatever order units came in), and
reorganization (correlated units contiguous) with partitions into blocks."""

from cipm.ordering.blocks import Partition, partition, split_order
from cipm.ordering.canonical import canonical_permutation, canonicalize
from cipm.ordering.heatmap import plot_correlation
from cipm.ordering.seriation import diagonality, reorganize, seriate

__all__ = [
    "Partition",
    "canonical_permutation",
    "canonicalize",
    "diagonality",
    "partition",
    "plot_correlation",
    "reorganize",
    "seriate",
    "split_order",
]
