"""What an alignment method is given: the two models, their graph and data, in one problem.

Methods are plugins (`cipm_align_methods`); the built-in ones (weight, activation, sinkhorn,
ste) are registered by ``cipm/alignment/builtin.py`` exactly as a third-party method would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.tensors.fitted import fitted_tensors

__all__ = ["AlignConfig", "AlignMethod", "AlignProblem", "checked_state"]


@dataclass(frozen=True)
class AlignConfig:
    """How hard an alignment method works.

    Attributes:
        seed: order of groups in coordinate descent (and any other randomness of a method).
        max_sweeps: bound on coordinate-descent sweeps (it normally stops at a fixed point).
        restarts: group orders to try (see `cipm.alignment.weight.weight_matching`).
        progress: show progress bars on work over data.
    """

    seed: int = 0
    max_sweeps: int = 100
    restarts: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("max_sweeps", "restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CipmError(f"AlignConfig.{name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class AlignProblem:
    """Line model B's units up with model A's: both models (checked against the graph and
    for finite weights on construction), their tensors, the data if any, the config."""

    model_a: torch.nn.Module
    model_b: torch.nn.Module
    graph: SymmetryGraph
    data: Iterable[Any] | None = None
    config: AlignConfig = AlignConfig()
    state_a: dict[str, torch.Tensor] = field(init=False, repr=False)
    state_b: dict[str, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_a", checked_state(self.model_a, self.graph, "model_a"))
        object.__setattr__(self, "state_b", checked_state(self.model_b, self.graph, "model_b"))

    def needs_data(self, method: str) -> Iterable[Any]:
        """The data, for a method that cannot work without it."""
        if self.data is None:
            raise CipmError(f"{method} matching needs data: pass data=<iterable of batches>")
        return self.data


AlignMethod = Callable[[AlignProblem], Permutation]


def checked_state(
    model: torch.nn.Module, graph: SymmetryGraph, which: str
) -> dict[str, torch.Tensor]:
    """`fitted_tensors` of a model to align, all finite.

    Raises:
        CipmError: the model does not fit the graph, or has non-finite values (naming them).
    """
    tensors = fitted_tensors(model, graph, which)
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CipmError(f"{which} has non-finite values in '{key}'; cannot align it")
    return tensors
