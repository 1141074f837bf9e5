"""`MatchConfig`: how federated clients are matched to the global model and averaged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cipm.alignment.methods import AlignConfig
from cipm.errors import CipmError

__all__ = ["MatchConfig"]


@dataclass(frozen=True)
class MatchConfig:
    """How `matched_average` (and `aggregate_updates`, `MatchedAveraging`) aligns and averages.

    Attributes:
        method: how each client is aligned: ``"weight"`` (weight matching, data-free),
            ``"activation"`` (from the clients' statistics, or from server data), any other
            name `cipm.align_methods()` lists, or such a method (a function of an
            `AlignProblem`).
        repair: REPAIR the average (`cipm.merge`; needs server data).
        passes: alignment passes; each after the first aligns the clients to the previous
            average by weight matching (useful for one-shot merging, where the reference is
            just one of the clients; not with client statistics).
        align: alignment seed, sweeps, restarts (`cipm.AlignConfig`).
    """

    method: Any = "weight"
    repair: bool = False
    passes: int = 1
    align: AlignConfig = field(default_factory=AlignConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) and not callable(self.method):
            raise CipmError(
                "MatchConfig.method must be a name from cipm.align_methods() or an alignment "
                f"method, got a {type(self.method).__name__}"
            )
        if not isinstance(self.repair, bool):
            raise CipmError(f"MatchConfig.repair must be True or False, got {self.repair!r}")
        passes = self.passes
        if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
            raise CipmError(f"MatchConfig.passes must be a whole number >= 1, got {passes!r}")
        if not isinstance(self.align, AlignConfig):
            raise CipmError(
                f"MatchConfig.align must be a cipm.AlignConfig, got {type(self.align).__name__}"
            )


def match_config(config: MatchConfig | None) -> MatchConfig:
    """`config`, or the defaults for None.

    Raises:
        CipmError: `config` is not a `MatchConfig` (an `AlignConfig` says where it goes now).
    """
    if config is None:
        return MatchConfig()
    if isinstance(config, AlignConfig):
        raise CipmError(
            "config is a MatchConfig now: pass config=MatchConfig(align=AlignConfig(...))"
        )
    if not isinstance(config, MatchConfig):
        raise CipmError(f"config must be a cipm.MatchConfig, got {type(config).__name__}")
    return config
