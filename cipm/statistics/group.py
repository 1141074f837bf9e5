"""Per-group activation statistics of a model on data, and of two models on the same data."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from cipm.errors import CipmError, UnknownGroupError
from cipm.graph.parts import PermGroup, Site
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.distributed import all_reduce_cross, all_reduce_moments, check_same_model
from cipm.statistics.moments import CrossMoments, Moments
from cipm.tensors.features import UnitFeatures, unit_features
from cipm.tensors.fitted import fitted_tensors

__all__ = ["CrossStatistics", "GroupStatistics", "Statistics"]


@dataclass(frozen=True)
class GroupStatistics:
    """Statistics of one group's units at its representative site."""

    group: PermGroup
    site: Site
    moments: Moments
    features: UnitFeatures

    @property
    def count(self) -> int:
        return self.moments.count

    @property
    def mean(self) -> torch.Tensor:
        return self.moments.mean

    @property
    def std(self) -> torch.Tensor:
        return self.moments.std

    @property
    def cov(self) -> torch.Tensor:
        return self.moments.cov

    @property
    def corr(self) -> torch.Tensor:
        return self.moments.corr


class _ByGroup(Mapping[str, Any]):
    """Read-only mapping from group name to per-group values, with merge by group."""

    def __init__(self, graph: SymmetryGraph, groups: Mapping[str, object]) -> None:
        if not isinstance(graph, SymmetryGraph):
            raise CipmError(f"statistics need the SymmetryGraph, got {type(graph).__name__}")
        if not isinstance(groups, Mapping):
            raise CipmError(f"statistics map group names to values, got {type(groups).__name__}")
        missing = [g.name for g in graph if g.name not in groups]
        if missing:
            raise CipmError(f"statistics are missing groups {missing}")
        names = {g.name for g in graph}
        extra = [name for name in groups if not isinstance(name, str) or name not in names]
        if extra:
            raise CipmError(f"statistics of groups the graph of {graph.model} lacks: {extra}")
        for g in graph:
            value = groups[g.name]
            if not isinstance(value, self._value):
                raise CipmError(
                    f"{type(self).__name__} of group '{g.name}' must be "
                    f"{self._value.__name__}, got {type(value).__name__}"
                )
            self._check(g, value)
        self.graph = graph
        self._groups = MappingProxyType(dict(groups))

    _value: type = object  # what every group's value is

    def _check(self, group: PermGroup, value: Any) -> None:
        """Raise a CipmError unless `value` (a `_value`) holds statistics of `group`'s
        units."""

    def __getitem__(self, name: str) -> Any:
        try:
            return self._groups[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownGroupError(f"no group {name!r}; groups are {list(self._groups)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def _same_graph(self, other: _ByGroup) -> None:
        if type(other) is not type(self):
            raise CipmError(
                f"cannot merge {type(self).__name__} with a {type(other).__name__}: merge "
                "statistics of the same kind"
            )
        if other.graph != self.graph:
            raise CipmError(
                "cannot merge statistics of different symmetry graphs "
                f"({self.graph.model} and {other.graph.model})"
            )


class Statistics(_ByGroup):
    """`GroupStatistics` for every group of a graph; `merge` combines shards exactly."""

    def __getitem__(self, name: str) -> GroupStatistics:
        return super().__getitem__(name)

    _value = GroupStatistics

    def _check(self, group: PermGroup, value: GroupStatistics) -> None:
        _check_moments(group, value.moments)

    def merge(self, other: Statistics) -> Statistics:
        """Statistics of the union of both shards' samples (exact and associative)."""
        self._same_graph(other)
        return Statistics(
            self.graph,
            {
                name: GroupStatistics(
                    s.group, s.site, s.moments.merge(other[name].moments), s.features
                )
                for name, s in ((n, self[n]) for n in self)
            },
        )

    def all_reduce(self, group: Any) -> Statistics:
        """Statistics of every rank's samples together: each rank calls it on the
        statistics of its shard (``cipm.collect(model, graph, shard).all_reduce(group)``).

        Args:
            group: a `torch.distributed` process group (``torch.distributed.group.WORLD``
                for all ranks).

        Raises:
            CipmError: torch.distributed is not initialized, the ranks' statistics are of
                other groups or sizes or of models with other weights, or a rank never
                reaches the all-reduce (its own collect failed).
        """
        names = list(self)
        check_same_model(
            torch.cat(
                [torch.cat([s.features.in_norm, s.features.out_norm]) for s in self.values()]
            ),
            group,
        )
        reduced = all_reduce_moments([self[n].moments for n in names], group)
        return Statistics(
            self.graph,
            {
                n: GroupStatistics(self[n].group, self[n].site, m, self[n].features)
                for n, m in zip(names, reduced, strict=True)
            },
        )

    def check_model(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """`model`'s tensors that the groups live in (`fitted_tensors`), once these
        statistics are known to be of `model`: they keep the weight features of the model
        they came from, which are compared.

        Raises:
            CipmError: the statistics were collected on another model.
        """
        try:
            tensors = fitted_tensors(model, self.graph)
        except CipmError as e:
            raise CipmError(f"the statistics are of another model: {e}") from None
        for name in self:
            s = self[name]
            now = unit_features(tensors, self.graph, s.group)
            if not torch.allclose(now.in_norm, s.features.in_norm, rtol=1e-6, atol=1e-9):
                raise CipmError(
                    f"the statistics were collected on another model (weights of group "
                    f"'{name}' differ); collect them on the model you pass"
                )
        return tensors

    def __repr__(self) -> str:
        count = self[next(iter(self))].count if len(self) else 0
        return f"Statistics({self.graph.model}: {len(self)} groups, {count} samples per unit)"


class CrossStatistics(_ByGroup):
    """Per group, moments of model A's and model B's units and their cross co-moment."""

    def __getitem__(self, name: str) -> CrossMoments:
        return super().__getitem__(name)

    _value = CrossMoments

    def _check(self, group: PermGroup, value: CrossMoments) -> None:
        _check_moments(group, value.a)
        _check_moments(group, value.b)
        if not bool(torch.isfinite(value.cross).all()):
            raise CipmError(f"cross statistics of group '{group.name}' hold NaN or Inf")

    def cov(self, name: str) -> torch.Tensor:
        """Cross-covariance (n, n): rows are A's units, columns B's."""
        return self[name].cov

    def corr(self, name: str) -> torch.Tensor:
        return self[name].corr

    def merge(self, other: CrossStatistics) -> CrossStatistics:
        self._same_graph(other)
        return CrossStatistics(self.graph, {n: self[n].merge(other[n]) for n in self})

    def all_reduce(self, group: Any) -> CrossStatistics:
        """Cross statistics of every rank's samples together (see `Statistics.all_reduce`)."""
        names = list(self)
        reduced = all_reduce_cross([self[n] for n in names], group)
        return CrossStatistics(self.graph, dict(zip(names, reduced, strict=True)))

    def __repr__(self) -> str:
        return f"CrossStatistics({self.graph.model}: {len(self)} groups)"


def _check_moments(group: PermGroup, m: Moments) -> None:
    """Moments of `group`'s units: `group.size` variables, finite."""
    if not isinstance(m, Moments) or len(m.mean) != group.size:
        size = len(m.mean) if isinstance(m, Moments) else type(m).__name__
        raise CipmError(
            f"statistics of group '{group.name}' must be of its {group.size} units, got {size}"
        )
    if not (bool(torch.isfinite(m.mean).all()) and bool(torch.isfinite(m.comoment).all())):
        raise CipmError(f"statistics of group '{group.name}' hold NaN or Inf")
