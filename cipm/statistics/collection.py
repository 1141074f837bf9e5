"""`cipm.collect` and `cipm.collect_cross`: statistics of every group's units on data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from cipm.errors import CipmError, PermutationError
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.capture import SiteRecorder
from cipm.statistics.group import CrossStatistics, GroupStatistics, Statistics, unit_features
from cipm.statistics.moments import CrossAccumulator, MomentAccumulator
from cipm.tensors.modify import fitted_tensors

__all__ = ["collect", "collect_cross", "model_inputs", "subsample"]

Inputs = Callable[[Any], Any]


def model_inputs(batch: Any) -> Any:
    """The model inputs in a batch: a tensor, the first item of an (inputs, targets) pair,
    or a dict of keyword inputs."""
    if isinstance(batch, tuple | list):
        if not batch:
            raise CipmError("an empty batch has no model inputs")
        return batch[0]
    return batch


def collect(
    model: torch.nn.Module,
    graph: SymmetryGraph,
    loader: Iterable[Any],
    *,
    inputs: Inputs = model_inputs,
    sample: float = 1.0,
    progress: bool = True,
) -> Statistics:
    """Mean, std, covariance and correlation of every group's units over `loader`.

    Streams float64 sufficient statistics (count, mean, co-moment) per batch; activations
    are never stored. Batch, token and spatial dims are folded into samples.

    Args:
        model: the traced model (run in eval semantics; its mode is left as it came).
        graph: its symmetry graph, from `cipm.trace`.
        loader: an iterable of batches (a DataLoader, a list of tensors, ...).
        inputs: maps a batch to model inputs (default: `model_inputs`).
        sample: fraction of each batch's samples (rows, tokens or spatial positions) to use,
            drawn reproducibly per batch; 1.0 (the default) uses all and is exact. The cost of
            a group's covariance grows with samples x units^2, which for wide groups (an MLP
            of 2048 units) rivals the forward pass; a fraction cuts it proportionally.
        progress: show a progress bar.

    Raises:
        CipmError: an empty loader, a batch that doesn't fit the model, a non-finite
            activation (naming group and batch), a graph of another model, or a bad `sample`.
    """
    _check_sample(sample)
    _check_fits(model, graph, "model")
    recorder = SiteRecorder(model, graph)
    totals = {g.name: MomentAccumulator() for g in graph}
    for i, batch in enumerate(_progress(loader, progress, "collect")):
        for name, x in recorder.run(inputs(batch), i).items():
            x = subsample(x, sample, i)
            _check_finite(totals[name].add(x), x, name, i)
    if len(graph) and not totals[graph.groups[0].name].count:
        raise CipmError("the loader yielded no batches; statistics need at least one")
    state = model.state_dict()
    return Statistics(
        graph,
        {
            g.name: GroupStatistics(
                g, recorder.sites[g.name], totals[g.name].moments(), unit_features(state, graph, g)
            )
            for g in graph
        },
    )


def collect_cross(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    graph: SymmetryGraph,
    loader: Iterable[Any],
    *,
    inputs: Inputs = model_inputs,
    sample: float = 1.0,
    progress: bool = True,
) -> CrossStatistics:
    """Per group, the n x n cross-covariance of model A's and model B's units on the same
    batches (and each model's own moments). Both models must fit `graph`.

    Raises:
        CipmError: as `collect`, or when a model does not fit the graph (naming the group).
    """
    _check_sample(sample)
    _check_fits(model_a, graph, "model_a")
    _check_fits(model_b, graph, "model_b")
    rec_a, rec_b = SiteRecorder(model_a, graph), SiteRecorder(model_b, graph)
    totals = {g.name: CrossAccumulator() for g in graph}
    for i, batch in enumerate(_progress(loader, progress, "collect_cross")):
        x = inputs(batch)
        units_a, units_b = rec_a.run(x, i), rec_b.run(x, i)
        for name, xa in units_a.items():
            xa, xb = subsample(xa, sample, i), subsample(units_b[name], sample, i)
            sum_a, sum_b = totals[name].add(xa, xb)
            _check_finite(sum_a, xa, name, i, "model_a")
            _check_finite(sum_b, xb, name, i, "model_b")
    if len(graph) and not totals[graph.groups[0].name].a.count:
        raise CipmError("the loader yielded no batches; statistics need at least one")
    return CrossStatistics(graph, {name: acc.moments() for name, acc in totals.items()})


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
    if not 0.0 < sample <= 1.0:
        raise CipmError(f"sample must be a fraction in (0, 1], got {sample}")


def _check_fits(model: torch.nn.Module, graph: SymmetryGraph, which: str) -> None:
    try:
        fitted_tensors(model, graph)
    except PermutationError as e:
        raise CipmError(f"{which}: {e}") from None


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


def _progress(loader: Iterable[Any], show: bool, what: str) -> Iterable[Any]:
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return tqdm(loader, total=total, desc=what, unit="batch", disable=not show, leave=False)
