"""Per-group activation statistics: observing group sites while a model runs, and streaming
float64 moments that merge exactly (across batches, shards, ranks and clients)."""

from cipm.statistics.collection import CollectConfig, collect, collect_cross
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics
from cipm.statistics.moments import CrossMoments, Moments

__all__ = [
    "CollectConfig",
    "CrossMoments",
    "CrossStatistics",
    "GroupStatistics",
    "Moments",
    "Statistics",
    "collect",
    "collect_cross",
]
