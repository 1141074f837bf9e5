"""The symmetry graph: a model's permutation groups, where each one lives (layouts of tensor
dimensions), and permutations of them."""

from cipm.graph.layout import Layout, Leaf, Product, Sum
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import (
    GroupKind,
    Member,
    OutputAxis,
    PermGroup,
    Site,
    SymmetryGraph,
    TensorAxis,
)

__all__ = [
    "GroupKind",
    "Layout",
    "Leaf",
    "Member",
    "OutputAxis",
    "PermGroup",
    "Permutation",
    "Product",
    "Site",
    "Sum",
    "SymmetryGraph",
    "TensorAxis",
]
