"""What `cipm.prune` returns: the smaller model and, beside it, the report of what was done
(which is also the policy `cipm.export` stores with it). Nothing rides on the model itself,
so a model permuted or canonicalized afterwards never carries a stale report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["KeptWhole", "PruneReport", "Pruned"]


@dataclass(frozen=True)
class KeptWhole:
    """A group `prune` left at full size: the model's own code could not follow its new size.

    `module` is the innermost module that was running when the pruned model failed ("" for
    the model itself), `reason` the error it raised.
    """

    group: str
    module: str
    reason: str


@dataclass(frozen=True)
class PruneReport:
    """What `prune` did: units per pruned group before and after, the original units each
    kept (ascending), the groups it kept whole, and whether the result was run to check.
    ``cipm.export(pruned.model, path, policy=pruned.report)`` stores it as the policy."""

    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    kept: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    kept_whole: tuple[KeptWhole, ...] = ()
    verified: bool = False


@dataclass(frozen=True)
class Pruned:
    """The result of `cipm.prune`: the new, smaller `model` and the `report` of what made it."""

    model: torch.nn.Module
    report: PruneReport
