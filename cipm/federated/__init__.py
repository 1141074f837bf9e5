"""Federated alignment: matched averaging of clients (`matched_average`, how: `MatchConfig`),
the server's aggregation of client updates as a pure function (`aggregate_updates`), and a
Flower strategy that does it each round (`MatchedAveraging`, loaded on first use: it needs the
``federated`` extra, and `import cipm` never imports Flower or Ray).

Learned co-canonicalization: each client sorts its units by the meta-analysis network's
scores on its own data (`canonical_client`), the server averages without pairwise matching
(`canonical_average`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cipm.federated.average import match_clients, matched_average
from cipm.federated.canonical import canonical_average, canonical_client
from cipm.federated.config import MatchConfig
from cipm.federated.updates import (
    STATISTICS_PREFIX,
    ClientUpdate,
    aggregate_updates,
    split_update,
    update_arrays,
)

if TYPE_CHECKING:
    from cipm.federated.strategy import MatchedAveraging, updates_from_replies

__all__ = [
    "STATISTICS_PREFIX",
    "ClientUpdate",
    "MatchConfig",
    "MatchedAveraging",
    "aggregate_updates",
    "canonical_average",
    "canonical_client",
    "match_clients",
    "matched_average",
    "split_update",
    "update_arrays",
    "updates_from_replies",
]

_FLOWER = ("MatchedAveraging", "updates_from_replies")


def __getattr__(name: str) -> Any:
    """The Flower-dependent names, imported when first asked for."""
    if name in _FLOWER:
        from cipm.federated import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module 'cipm.federated' has no attribute {name!r}")
