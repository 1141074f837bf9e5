"""Orders of units: canonical form (one order, whatever order units came in), and
reorganization (correlated units contiguous) with partitions into blocks."""

from cipm.ordering.canonical import canonical_permutation, canonicalize
from cipm.ordering.seriation import (
    Partition,
    diagonality,
    partition,
    plot_correlation,
    reorganize,
    seriate,
)

__all__ = [
    "Partition",
    "canonical_permutation",
    "canonicalize",
    "diagonality",
    "partition",
    "plot_correlation",
    "reorganize",
    "seriate",
]
