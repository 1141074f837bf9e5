"""The built-in training objectives of the meta-analysis network (seed 002 section 5.1), a
built-in plugin of the meta room (`cipm.hooks.manager.BUILT_INS`). Each is scaled so that a
random order of the units scores about 1, so that the weights of a sum compare.

- ``compression``: keeping the highest-ranked units loses least, end to end: the model runs
  with every prunable group's units scaled by a soft keep-mask of their ranks (at 25, 50 and
  75 % kept), and the output error is divided by that of random orders.
- ``correlation``: correlated units get close ranks (seriation): sum |corr_ij| (r_i - r_j)^2
  over pairs (|corr| summing to 1) over twice the ranks' variance, a Rayleigh quotient as in
  spectral seriation: soft ranks that crowd together (near-tied scores average) gain
  nothing, so the network cannot win by collapsing them.
- ``stability``: the ranks from disjoint calibration views of the data agree: 1 - their
  correlation (a soft Spearman distance, as blind to crowding).
- ``alignment``: a partner model's units get the ranks of the subject's units they match
  (targets from activation matching): 1 - the correlation of the matched ranks; subjects
  without a partner contribute nothing.
- ``canonicalization``: scores stay apart, so the order survives small noise: mean of
  exp(-gap / mean gap) over neighbouring sorted scores.
- ``relevance``: units that matter to the output rank first: with w_i a unit's exact masking
  relevance (`cipm.meta.relevance.unit_relevance` on the first calibration batch) over its
  group's total, 2 sum_i w_i (1 - r_i). Soft ranks average 1/2 whatever the scores, so any
  order of equally relevant units, crowded ranks and a random order all score 1, and the
  exact relevance order scores least (the loss is linear in the ranks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from cipm.batches import model_inputs
from cipm.errors import CipmError
from cipm.hooks.hookspecs import hookimpl
from cipm.meta.masking import MaskedModel
from cipm.meta.objective import Objective, ObjectiveInput, Subject
from cipm.meta.ranks import standardized
from cipm.meta.relevance import leaves as _leaves
from cipm.meta.relevance import output_error as _output_error
from cipm.meta.relevance import relevance_groups, unit_relevance
from cipm.pruning.targets import PRUNABLE

KEEP = (0.25, 0.5, 0.75)  # fractions of units the compression objective keeps
SHARPNESS = 0.05  # width of the soft keep-mask, in normalized rank
RANDOM_ORDERS = 4  # random orders that set the compression objective's scale


@hookimpl
def cipm_objectives() -> Mapping[str, Objective]:
    return {
        "compression": compression,
        "correlation": correlation,
        "stability": stability,
        "alignment": alignment,
        "canonicalization": canonicalization,
        "relevance": relevance,
    }


def keep_mask(ranks: torch.Tensor, keep: float) -> torch.Tensor:
    """Soft mask of the `keep` fraction of highest-ranked units."""
    return torch.sigmoid((ranks - (1.0 - keep)) / SHARPNESS)


@dataclass(frozen=True)
class _Compression:
    masked: MaskedModel
    inputs: object
    reference: list[torch.Tensor]
    scale: dict[float, float]


def compression(batch: ObjectiveInput) -> torch.Tensor:
    c = _compression(batch.subject)
    if not c.masked.sites:
        return _zero(batch)
    losses = []
    for q in KEEP:
        out = c.masked(c.inputs, {g: keep_mask(batch.ranks[g], q) for g in c.masked.sites})
        losses.append(_output_error(out, c.reference) / c.scale[q])
    return torch.stack(losses).mean()


def _compression(s: Subject) -> _Compression:
    if "compression" in s.cache:
        return s.cache["compression"]
    if not s.calibration:
        raise CipmError(f"the compression objective needs calibration batches ({s.name})")
    graph = s.stats.graph
    groups = [g.name for g in graph if g.kind in PRUNABLE and g.size >= 2]
    inputs = model_inputs(s.calibration[0])
    masked = MaskedModel(s.model, graph, inputs, groups)
    with torch.no_grad():
        reference = _leaves(masked(inputs, {}))
        generator = torch.Generator().manual_seed(0)
        scale = {}
        for q in KEEP:
            errors = []
            for _ in range(RANDOM_ORDERS):
                masks = {}
                for g in groups:
                    n = graph[g].size
                    masks[g] = (torch.randperm(n, generator=generator) < round(q * n)).double()
                errors.append(_output_error(masked(inputs, masks), reference))
            scale[q] = max(float(torch.stack(errors).mean()), 1e-12)
    s.cache["compression"] = _Compression(masked, inputs, reference, scale)
    return s.cache["compression"]


def correlation(batch: ObjectiveInput) -> torch.Tensor:
    strengths = batch.subject.cache.get("correlation")
    if strengths is None:
        strengths = {}
        for name in batch.ranks:
            a = batch.subject.stats[name].corr.abs().to(torch.float64).fill_diagonal_(0.0)
            if a.shape[0] >= 3 and float(a.sum()) > 0:
                strengths[name] = a / a.sum()
        batch.subject.cache["correlation"] = strengths
    terms = []
    for name, a in strengths.items():
        r = batch.ranks[name]
        spread = 2.0 * r.var(unbiased=False) + 1e-12
        terms.append((a * (r[:, None] - r[None, :]).square()).sum() / spread)
    return _mean(terms, batch)


def stability(batch: ObjectiveInput) -> torch.Tensor:
    s = batch.subject
    if len(s.views) < 2:
        raise CipmError(
            f"the stability objective needs statistics of two disjoint views of the data "
            f"({s.name} has {len(s.views)})"
        )
    first, second = (batch.rank(s.model, v) for v in s.views[:2])
    return _mean(_rank_distances(first, second, None), batch)


def alignment(batch: ObjectiveInput) -> torch.Tensor:
    partner = batch.subject.partner
    if partner is None:
        return _zero(batch)
    theirs = batch.rank(partner.model, partner.stats)
    return _mean(_rank_distances(batch.ranks, theirs, partner.target), batch)


def canonicalization(batch: ObjectiveInput) -> torch.Tensor:
    terms = []
    for scores in batch.scores.values():
        n = scores.numel()
        if n < 3:
            continue
        gaps = standardized(scores).sort().values.diff()
        mean_gap = float(gaps.detach().sum()) / (n - 1) + 1e-12
        terms.append(2.0 * torch.exp(-gaps / mean_gap).mean())
    return _mean(terms, batch)


def relevance(batch: ObjectiveInput) -> torch.Tensor:
    weights = _relevance(batch.subject)
    terms = [2.0 * (w * (1.0 - batch.ranks[g])).sum() for g, w in weights.items()]
    return _mean(terms, batch)


def _relevance(s: Subject) -> dict[str, torch.Tensor]:
    """Each group's masking relevance over its total (groups with none left out)."""
    if "relevance" in s.cache:
        return s.cache["relevance"]
    if not s.calibration:
        raise CipmError(f"the relevance objective needs calibration batches ({s.name})")
    groups = relevance_groups(s.stats.graph)
    inputs = model_inputs(s.calibration[0])
    cached = s.cache.get("compression")
    model = cached.masked if cached is not None else s.model
    found = unit_relevance(model, s.stats.graph, inputs, groups) if groups else {}
    s.cache["relevance"] = {g: r / r.sum() for g, r in found.items() if float(r.sum()) > 0}
    return s.cache["relevance"]


def _rank_distances(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], target: object
) -> Iterable[torch.Tensor]:
    for name, r in a.items():
        if r.numel() < 2:
            continue
        other = b[name] if target is None else b[name][target[name]]  # type: ignore[index]
        x, y = r - r.mean(), other - other.mean()
        yield 1.0 - (x * y).sum() / (x.norm() * y.norm() + 1e-12)


def _mean(terms: Iterable[torch.Tensor], batch: ObjectiveInput) -> torch.Tensor:
    terms = list(terms)
    return torch.stack(terms).mean() if terms else _zero(batch)


def _zero(batch: ObjectiveInput) -> torch.Tensor:
    """A loss of 0 that is still part of the graph (no group to score)."""
    return sum(s.sum() for s in batch.scores.values()) * 0.0  # type: ignore[return-value]
