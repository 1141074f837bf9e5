"""Per-group activation statistics: observing group sites while a model runs, streaming
float64 moments that merge exactly, and correlation graphs built from them."""

from cipm.statistics.collection import collect, collect_cross
from cipm.statistics.corrgraph import bipartite_graph, correlation_graph, network_graph
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics
from cipm.statistics.moments import CrossMoments, Moments

__all__ = [
    "CrossMoments",
    "CrossStatistics",
    "GroupStatistics",
    "Moments",
    "Statistics",
    "bipartite_graph",
    "collect",
    "collect_cross",
    "correlation_graph",
    "network_graph",
]
