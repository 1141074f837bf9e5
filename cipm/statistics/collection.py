"""`cipm.collect` and `cipm.collect_cross`: statistics of every group's units on data.

Every statistic cipm gathers on data (these two, REPAIR's, pruning's folds) is one loop:
batch -> model inputs -> a `SiteRecorder` run -> float64 accumulators, in `accumulate` and
`accumulate_cross`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cipm.batches import Inputs, check_loader, model_inputs, progress
from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.capture import SiteRecorder
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics
from cipm.statistics.moments import CrossAccumulator, CrossMoments, MomentAccumulator, Moments
from cipm.tensors.features import unit_features
from cipm.tensors.fitted import fitted_tensors

__all__ = [
    "CollectConfig",
    "accumulate",
    "accumulate_cross",
    "collect",
    "collect_cross",
    "statistics_of",
    "subsample",
]


@dataclass(frozen=True)
class CollectConfig:
    """How `collect` and `collect_cross` read the data.

    Attributes:
        inputs: maps a batch to model inputs (default: `model_inputs`).
        sample: fraction of each batch's samples (rows, tokens or spatial positions) to use,
            drawn reproducibly per batch; 1.0 (the default) uses all and is exact. The cost of
            a group's covariance grows with samples x units^2, which for wide groups (an MLP
            of 2048 units) rivals the forward pass; a fraction cuts it proportionally.
        progress: show a progress bar.
    """

    inputs: Inputs = model_inputs
    sample: float = 1.0
    progress: bool = True

    def __post_init__(self) -> None:
        _check_sample(self.sample)


def collect(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    data: Iterable[Any],
    *,
    config: CollectConfig | None = None,
) -> Statistics:
    """Mean, std, covariance and correlation of every group's units over `data`.

    Streams float64 sufficient statistics (count, mean, co-moment) per batch; activations
    are never stored. Batch, token and spatial dims are folded into samples. Across
    `torch.distributed` ranks, every rank collects on its own shard and
    ``stats.all_reduce(group)`` gives every rank the statistics of all shards, exactly.

    Args:
        model: the traced model (run in eval semantics; its mode is left as it came).
        graph: its symmetry graph, from `cipm.trace`.
        data: an iterable of batches (a DataLoader, a list of tensors, ...).
        config: how batches become inputs, sampling, progress (`CollectConfig`).

    Raises:
        CipmError: empty data, a batch that doesn't fit the model, a non-finite activation
            (naming group and batch), or a graph of another model.
    """
    return statistics_of(model, fitted_tensors(model, graph), graph, data, _config(config))


def statistics_of(
    model: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    graph: SymmetryGraph,
    data: Iterable[Any],
    config: CollectConfig,
) -> Statistics:
    """`collect` for a model whose tensors were read and checked against `graph` already (a
    problem object's): they give the units' weight features, and nothing is read again."""
    recorder = SiteRecorder(model, graph)
    moments = accumulate(
        recorder, data, inputs=config.inputs, sample=config.sample, show=config.progress
    )
    return Statistics(
        graph,
        {
            g.name: GroupStatistics(
                g, recorder.sites[g.name], moments[g.name], unit_features(tensors, graph, g)
            )
            for g in graph
        },
    )


def collect_cross(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    graph: SymmetryGraph,
    data: Iterable[Any],
    *,
    config: CollectConfig | None = None,
) -> CrossStatistics:
    """Per group, the n x n cross-covariance of model A's and model B's units on the same
    batches (and each model's own moments). Both models must fit `graph`. Across ranks:
    ``cross.all_reduce(group)``, as for `collect`.

    Raises:
        CipmError: as `collect`, or when a model does not fit the graph (naming the group).
    """
    config = _config(config)
    fitted_tensors(model_a, graph, "model_a")
    fitted_tensors(model_b, graph, "model_b")
    rec_a, rec_b = SiteRecorder(model_a, graph), SiteRecorder(model_b, graph)
    moments = accumulate_cross(
        rec_a,
        rec_b,
        data,
        inputs=config.inputs,
        sample=config.sample,
        show=config.progress,
        what="collect_cross",
    )
    return CrossStatistics(graph, moments)


def _config(config: CollectConfig | None) -> CollectConfig:
    if config is None:
        return CollectConfig()
    if not isinstance(config, CollectConfig):
        raise CipmError(f"config must be a cipm.CollectConfig, got {type(config).__name__}")
    return config


def accumulate(
    recorder: SiteRecorder,
    loader: Iterable[Any],
    *,
    inputs: Inputs = model_inputs,
    groups: Collection[str] | None = None,
    sample: float = 1.0,
    show: bool = False,
    what: str = "collect",
) -> dict[str, Moments]:
    """Moments of each group's units at the recorder's sites (or of `groups` only) over
    `loader`, streamed.

    Raises:
        CipmError: an empty loader, or a non-finite activation (naming group and batch).
    """
    check_loader(loader, what)
    names = list(recorder.sites if groups is None else groups)
    totals = {name: MomentAccumulator() for name in names}
    for i, batch in enumerate(progress(loader, show, what)):
        for name, x in recorder.run(inputs(batch), i, groups).items():
            x = subsample(x, sample, i)
            _check_finite(totals[name].add(x), x, name, i)
    _check_seen(names, totals[names[0]].count if names else 1, what)
    return {name: acc.moments() for name, acc in totals.items()}


def accumulate_cross(
    rec_a: SiteRecorder,
    rec_b: SiteRecorder,
    loader: Iterable[Any],
    *,
    inputs: Inputs = model_inputs,
    pairs: Mapping[str, str] | None = None,
    grams: tuple[bool, bool] = (True, True),
    sample: float = 1.0,
    show: bool = False,
    what: str = "collect_cross",
) -> dict[str, CrossMoments]:
    """Cross moments of two models' units on the same batches: per group of A (`pairs`
    maps A's groups to B's; default: every group of A to B's of the same name), keyed by
    A's names. `grams` says whether A's and B's own co-moments are needed.

    Raises:
        CipmError: an empty loader, or a non-finite activation (naming model, group, batch).
    """
    check_loader(loader, what)
    pairs = dict(pairs) if pairs is not None else {n: n for n in rec_a.sites}
    totals = {name: CrossAccumulator(grams) for name in pairs}
    for i, batch in enumerate(progress(loader, show, what)):
        x = inputs(batch)
        units_a, units_b = rec_a.run(x, i, pairs), rec_b.run(x, i, pairs.values())
        for name, b_name in pairs.items():
            xa, xb = subsample(units_a[name], sample, i), subsample(units_b[b_name], sample, i)
            sum_a, sum_b = totals[name].add(xa, xb)
            _check_finite(sum_a, xa, name, i, "model_a")
            _check_finite(sum_b, xb, name, i, "model_b")
    names = list(pairs)
    _check_seen(names, totals[names[0]].a.count if names else 1, what)
    return {name: acc.moments() for name, acc in totals.items()}


def subsample(blocks: torch.Tensor, fraction: float, batch: int) -> torch.Tensor:
    """A reproducible `fraction` of the samples of (pre, n, post) blocks: rows when post is
    1, else positions along post (every pre kept). The same batch index picks the same
    samples, so two models' blocks stay aligned."""
    if fraction >= 1.0:
        return blocks
    pre, _, post = blocks.shape
    along = 0 if post == 1 else 2
    total = pre if post == 1 else post
    keep = max(1, round(total * fraction))
    gen = torch.Generator().manual_seed(batch)
    index = torch.randperm(total, generator=gen)[:keep].sort().values
    return blocks.index_select(along, index)


def _check_sample(sample: float) -> None:
    if not isinstance(sample, int | float) or isinstance(sample, bool) or not 0.0 < sample <= 1.0:
        raise CipmError(f"sample must be a fraction in (0, 1], got {sample}")


def _check_seen(names: list[str], count: int, what: str) -> None:
    if names and not count:
        raise CipmError(f"{what}: the loader yielded no batches; statistics need at least one")


def _check_finite(
    total: torch.Tensor, x: torch.Tensor, group: str, batch: int, which: str = "model"
) -> None:
    """Any NaN or Inf among a batch's activations makes their sum non-finite."""
    if not torch.isfinite(total).all():
        bad = int((~torch.isfinite(x)).sum())
        raise CipmError(
            f"{which} produced {bad} non-finite (NaN or Inf) activations in group '{group}' "
            f"on batch {batch}; check the inputs and weights of that batch"
        )
