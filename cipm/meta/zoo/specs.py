"""What a zoo holds: the specs of its models, the specimens `load_zoo` returns, the splits."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.group import Statistics

__all__ = [
    "FAMILIES",
    "HELDOUT_FAMILY",
    "HELDOUT_SEEDS",
    "HELDOUT_WIDTHS",
    "SPLITS",
    "Specimen",
    "ZooSpec",
    "arch",
    "pairs",
    "same_architecture",
    "split_of",
    "zoo_specs",
]

FAMILIES: tuple[str, ...] = ("mlp-digits", "cnn-digits", "mlp-mnist1d", "transformer-seq")
SPLITS: tuple[str, ...] = ("train", "heldout-seed", "heldout-width", "heldout-family")
HELDOUT_FAMILY = "transformer-seq"
HELDOUT_SEEDS: tuple[int, ...] = (3,)
HELDOUT_WIDTHS: tuple[int, ...] = (128,)
HEADS = 2  # attention heads of the transformer family


@dataclass(frozen=True)
class ZooSpec:
    """One model of the zoo: its family, width (hidden units, channels or embedding dims),
    depth (hidden layers, conv blocks or transformer blocks) and training seed.

    Raises:
        CipmError: an unknown family, a width, depth or seed that is not a whole number in
            range, or a transformer width its heads do not divide.
    """

    family: str
    width: int
    depth: int
    seed: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise CipmError(f"unknown zoo family {self.family!r}; use one of {list(FAMILIES)}")
        for name, low in (("width", 1), ("depth", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise CipmError(f"ZooSpec.{name} must be a whole number >= {low}, got {value!r}")
        if self.family == "transformer-seq" and self.width % HEADS:
            raise CipmError(
                f"ZooSpec width {self.width} of a transformer-seq model must be a multiple "
                f"of its {HEADS} heads"
            )

    @property
    def name(self) -> str:
        """The entry's folder name, e.g. ``mlp-digits-w64-d2-s0``."""
        return f"{self.family}-w{self.width}-d{self.depth}-s{self.seed}"


@dataclass(frozen=True, eq=False)
class Specimen:
    """A trained model of the zoo, with what the meta-analysis network reads of it.

    Attributes:
        spec: what it is. split: ``"train"``, ``"heldout-seed"``, ``"heldout-width"`` or
            ``"heldout-family"``.
        model: trained, in eval mode, float32. graph: its symmetry graph.
        views: its statistics on the two disjoint halves of `calibration`.
        calibration: the calibration batches, (inputs, targets) as `cipm.collect` takes them.
        accuracy: test accuracy of the trained model, on data it was not trained on.
    """

    spec: ZooSpec
    split: str
    model: nn.Module
    graph: SymmetryGraph
    views: tuple[Statistics, ...]
    calibration: list[tuple[torch.Tensor, torch.Tensor]]
    accuracy: float

    @property
    def stats(self) -> Statistics:
        """Statistics of the whole calibration set: the views merged (exact)."""
        return functools.reduce(Statistics.merge, self.views)


def zoo_specs(
    families: Sequence[str] = FAMILIES,
    widths: Sequence[int] = (16, 32, 64),
    heldout_widths: Sequence[int] = HELDOUT_WIDTHS,
    depths: Sequence[int] = (2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    heldout_seeds: Sequence[int] = HELDOUT_SEEDS,
) -> list[ZooSpec]:
    """Every combination of family, width (trained and held out), depth and seed (trained
    and held out): the default zoo has 4 x 4 x 2 x 4 = 128 models."""
    return [
        ZooSpec(family, width, depth, seed)
        for family in families
        for width in (*widths, *heldout_widths)
        for depth in depths
        for seed in (*seeds, *heldout_seeds)
    ]


def split_of(
    spec: ZooSpec,
    *,
    heldout_seeds: Sequence[int] = HELDOUT_SEEDS,
    heldout_widths: Sequence[int] = HELDOUT_WIDTHS,
) -> str:
    """The split `spec` belongs to: the held-out family first, then held-out widths, then
    held-out seeds; ``"train"`` otherwise."""
    if spec.family == HELDOUT_FAMILY:
        return "heldout-family"
    if spec.width in heldout_widths:
        return "heldout-width"
    if spec.seed in heldout_seeds:
        return "heldout-seed"
    return "train"


def pairs(zoo: Sequence[Specimen]) -> list[tuple[Specimen, Specimen]]:
    """Every two specimens of the same family, width and depth, lower seed first."""
    return same_architecture(zoo, lambda s: s.spec)


def arch(spec: ZooSpec) -> tuple[str, int, int]:
    return spec.family, spec.width, spec.depth


def same_architecture(
    items: Sequence[Any], spec_of: Callable[[Any], ZooSpec]
) -> list[tuple[Any, Any]]:
    """Every two items of the same architecture and different seeds, lower seed first."""
    by_arch: dict[tuple[str, int, int], list[Any]] = {}
    for item in items:
        by_arch.setdefault(arch(spec_of(item)), []).append(item)
    found = []
    for group in by_arch.values():
        group.sort(key=lambda item: spec_of(item).seed)
        found += [
            (a, b)
            for a, b in itertools.combinations(group, 2)
            if spec_of(a).seed != spec_of(b).seed
        ]
    return found
