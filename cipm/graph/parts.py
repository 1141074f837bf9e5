"""The parts of a symmetry graph: group kinds, the tensor axes and activation sites a group
lives in, and the groups themselves. All frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cipm.errors import CipmError
from cipm.graph.layout import Layout, groups_in

__all__ = ["GroupKind", "Member", "OutputAxis", "PermGroup", "Site", "TensorAxis"]


class GroupKind(str, Enum):
    """What the units of a group are."""

    HEADS = "heads"
    EXPERTS = "experts"
    WITHIN_HEAD = "within_head"
    RESIDUAL = "residual"
    CHANNELS = "channels"
    HIDDEN = "hidden"
    OTHER = "other"

    @classmethod
    def from_tags(cls, tags: frozenset[str]) -> GroupKind:
        """Kind from the rules' tags: heads, experts and within-head first; a residual stream is
        units made by two or more layers ('made:' tags) and added together ('sum'); else
        what the producing layer says (channels, hidden)."""
        for kind in (cls.HEADS, cls.EXPERTS, cls.WITHIN_HEAD):
            if kind.value in tags:
                return kind
        if "sum" in tags and sum(t.startswith("made:") for t in tags) >= 2:
            return cls.RESIDUAL
        for kind in (cls.CHANNELS, cls.HIDDEN):
            if kind.value in tags:
                return kind
        return cls.OTHER


@dataclass(frozen=True)
class TensorAxis:
    """One dimension of a parameter or buffer, and how groups lay out inside it."""

    key: str
    dim: int
    layout: Layout

    def groups(self) -> list[str]:
        return groups_in(self.layout)


@dataclass(frozen=True)
class OutputAxis:
    """A dimension of the model's `index`-th output that groups reach (outputs="free")."""

    index: int
    dim: int
    layout: Layout


@dataclass(frozen=True)
class Member:
    """A place a group's units appear in the model state: tensor `key`, dimension `dim`.

    `unit` is the span of one unit inside that dimension (head_dim for heads, 1 otherwise).
    `consumes` is True where an op sums over the units along this dim (a layer's input
    axis: the co-inverse side); False where the tensor makes or scales them (a layer's output
    axis, its bias, a norm's affine parameters, running statistics, an embedding's columns).
    """

    key: str
    dim: int
    unit: int = 1
    consumes: bool = False


@dataclass(frozen=True)
class Site:
    """An activation where a group's units are observable: graph node, module path, dim.

    `layout` is None when the dim holds exactly the group's units; otherwise it is the dim's
    layout tree (the group is a factor or segment of it, e.g. heads inside heads x head_dim).
    """

    node: str
    module: str
    op: str
    dim: int
    layout: Layout | None = None
    # samples per unit the activation held when traced (0: not known); they rank a group's
    # sites, which is all they are for, so they stay out of equality (`resized` keeps them)
    samples: int = field(default=0, compare=False)


@dataclass(frozen=True)
class PermGroup:
    """One permutation group: units that must be permuted together, everywhere at once."""

    name: str
    size: int
    kind: GroupKind
    members: tuple[Member, ...]
    sites: tuple[Site, ...] = ()
    within: str | None = None  # the group this one is nested in (within-head: its heads)

    def __post_init__(self) -> None:
        if self.size < 2:
            raise CipmError(f"group '{self.name}' has size {self.size}; a group needs >= 2 units")
        if not self.members:
            raise CipmError(f"group '{self.name}' has no member axes")

    @property
    def unit(self) -> int:
        """Span of one unit (head_dim for attention heads, 1 for plain units)."""
        return max(m.unit for m in self.members)
