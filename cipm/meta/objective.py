"""What the meta-network is trained for: objectives are plugins (`cipm_objectives`).

An objective is a function ``objective(batch: ObjectiveInput) -> torch.Tensor`` returning a
scalar loss, differentiable in ``batch.ranks`` (or ``batch.scores``); training minimizes
``sum_i weight_i * objective_i`` over the `Subject` models of a zoo. The built-in ones
(compression, correlation, stability, alignment, canonicalization, relevance) live in
``cipm/meta/builtin_objectives.py`` and register exactly as a third-party objective would::

    @cipm.hookimpl
    def cipm_objectives():
        return {"sparsity": my_objective}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cipm.graph.symmetry import Permutation
from cipm.statistics.group import Statistics

__all__ = [
    "Objective",
    "ObjectiveInput",
    "Partner",
    "Ranker",
    "Subject",
]


@dataclass(frozen=True)
class Partner:
    """A model of the same architecture trained apart, and the permutation that lines it up
    with the subject (``cipm.permute(partner.model, target)`` matches unit for unit)."""

    model: torch.nn.Module
    stats: Statistics
    target: Permutation


@dataclass(frozen=True, eq=False)
class Subject:
    """One model to train on: its statistics on calibration data (all of it, and disjoint
    views of it), the calibration batches, and optionally a partner to align with."""

    name: str
    model: torch.nn.Module
    stats: Statistics
    views: tuple[Statistics, ...] = ()
    calibration: Sequence[Any] = ()
    partner: Partner | None = None
    # what objectives precompute about this subject (an exported program, reference
    # outputs), kept across steps; each objective uses its own key
    cache: dict[str, Any] = field(default_factory=dict, repr=False)


Ranker = Callable[[torch.nn.Module, Statistics], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class ObjectiveInput:
    """One training step's view of a subject: the network's scores and soft ranks of its
    units per group (ranks in [0, 1], 1 for the highest score), the current soft-rank
    strength, a `rank` function giving the soft ranks of another model or statistics
    through the same network (a view, the partner), and the step's random generator."""

    subject: Subject
    scores: Mapping[str, torch.Tensor]
    ranks: Mapping[str, torch.Tensor]
    strength: float
    rank: Ranker
    generator: torch.Generator


Objective = Callable[[ObjectiveInput], torch.Tensor]
