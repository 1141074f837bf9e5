"""`MetaConfig`: the shape of a meta-analysis network and what it reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from cipm.errors import CipmError

__all__ = ["Correlation", "FitConfig", "MetaConfig"]

Correlation = Literal["pearson", "covariance"]


@dataclass(frozen=True)
class MetaConfig:
    """A meta-analysis network's architecture (the weights do not depend on any width).

    Attributes:
        hidden: width of every unit's embedding.
        layers: rounds of message passing; each round passes messages at three scales:
            within a group (its correlation graph), between groups (through the weights
            that connect them, both directions) and globally (means over the group and
            over all groups).
        k: neighbours per unit in a group's correlation graph (its top-k |correlation|).
        k_weights: neighbours per unit through a weight (its k largest-magnitude inputs).
        correlation: what links units within a group: ``"pearson"`` correlation or
            ``"covariance"`` (scaled by the group's largest variance).
        hierarchical: pass messages between groups and globally; False reads each group's
            own correlation graph only (flat).
        weight_features: read incoming/outgoing weight norms and biases as unit features
            (False: activation statistics only).
    """

    hidden: int = 32
    layers: int = 3
    k: int = 16
    k_weights: int = 8
    correlation: Correlation = "pearson"
    hierarchical: bool = True
    weight_features: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "k", "k_weights"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CipmError(f"MetaConfig.{name} must be a whole number >= 1, got {value!r}")
        if self.correlation not in ("pearson", "covariance"):
            raise CipmError(
                f"MetaConfig.correlation must be 'pearson' or 'covariance', "
                f"not {self.correlation!r}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MetaConfig:
        """Raises CipmError for text that is not a config of this version."""
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise CipmError(f"not a MetaConfig: {e}") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise CipmError(f"not a MetaConfig of this cipm version: {text[:200]}")
        return cls(**data)


@dataclass(frozen=True)
class FitConfig:
    """How `MetaAnalyzer.fit` trains.

    Attributes:
        steps: optimizer steps. batch: zoo models per step. lr: Adam's learning rate.
        seed: the draw of models per step (a run resumed from a checkpoint ends bit for bit
            where an uninterrupted one does).
        every: steps between checkpoints. progress: show a progress bar.
    """

    steps: int = 300
    batch: int = 4
    lr: float = 3e-3
    seed: int = 0
    every: int = 25
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CipmError(f"fit: {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.lr, int | float) or not self.lr > 0:
            raise CipmError(f"fit: lr must be > 0, got {self.lr!r}")
