"""The symmetry graph: a model's permutation groups, where each one lives (layouts of tensor
dimensions), and permutations of them."""

from cipm.graph.layout import Layout, Leaf, Product, Sum
from cipm.graph.parts import GroupKind, Member, OutputAxis, PermGroup, Site, TensorAxis
from cipm.graph.symmetry import Permutation, SymmetryGraph

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
