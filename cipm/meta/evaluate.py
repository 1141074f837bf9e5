"""A trained meta-analysis network beside the analytic policies, on zoo models it did not
train on: the rows behind ``cipm meta eval`` and ``benchmarks/meta.py``.

Per specimen: test accuracy after pruning a `ratio` of every prunable group (learned keep
and merge fold; analytic merge; magnitude); how stable each order is between the two
disjoint calibration views (Spearman correlation of the scores: learned; activation RMS for
the analytic canonical key); how diagonal the reorganized correlation matrices are (learned
order; optimal leaf ordering; spectral). Per pair of specimens trained apart: how well unit
i of one matches unit i of the other once each is canonicalized alone (mean correlation of
the units at equal positions: learned; analytic with statistics; weight matching, the upper
bound; as trained, the random baseline).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from cipm.alignment.dispatch import align
from cipm.errors import CipmWarning
from cipm.meta.zoo import pairs as specimen_pairs
from cipm.meta.zoo.families import accuracy_on
from cipm.ordering.canonical import canonicalize
from cipm.ordering.seriation import diagonality, reorganize
from cipm.pruning.problem import PruneConfig
from cipm.pruning.structured import prune
from cipm.statistics.collection import CollectConfig, collect, collect_cross
from cipm.tensors.modify import permute

__all__ = [
    "PairRow",
    "SpecimenRow",
    "disjoint_pairs",
    "evaluate_pairs",
    "evaluate_specimens",
    "spearman",
    "table",
]

PRUNING = ("learned", "fold", "magnitude")
SERIATION = ("learned", "olo", "spectral")
MATCHING = ("learned", "analytic", "weight", "random")


@dataclass(frozen=True)
class SpecimenRow:
    name: str
    split: str
    accuracy: float
    pruned: Mapping[str, float]  # method -> test accuracy after pruning
    stability: Mapping[str, float]  # "learned" / "analytic" -> Spearman between views
    diagonality: Mapping[str, float]  # seriation -> mean over groups


@dataclass(frozen=True)
class PairRow:
    name: str  # "a ~ b"
    matched: Mapping[str, float]  # method -> mean correlation of units at equal positions


def evaluate_specimens(
    meta: Any, zoo: Sequence[Any], test: Mapping[str, Any], *, ratio: float = 0.5
) -> list[SpecimenRow]:
    """Rows for every specimen; `test` maps a family to its test batches."""
    rows = []
    for s in tqdm(zoo, desc="meta eval", leave=False):
        stats = s.stats
        pruned: dict[str, float] = {}
        for method in PRUNING:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CipmWarning)
                chosen = meta.prune_method() if method == "learned" else method
                config = PruneConfig(progress=False)
                small = prune(s.model, stats, ratio=ratio, method=chosen, config=config).model
            pruned[method] = accuracy_on(small, test[s.spec.family])
        first, second = (meta.scores(s.model, v) for v in s.views[:2])
        rms = [{g: _rms(v[g].moments) for g in v} for v in s.views[:2]]
        stability = {"learned": spearman(first, second), "analytic": spearman(*rms)}
        diagonal: dict[str, float] = {}
        for seriation in SERIATION:
            if seriation == "learned":
                order = meta.policy(s.model, stats)
            else:
                order = reorganize(s.model, stats, method=seriation)
            values = [
                diagonality(stats[g].corr, order[g]) for g in stats if stats[g].group.size > 2
            ]
            diagonal[seriation] = sum(values) / max(len(values), 1)
        rows.append(SpecimenRow(s.spec.name, s.split, s.accuracy, pruned, stability, diagonal))
    return rows


def disjoint_pairs(zoo: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Pairs of specimens of one architecture, seeds 0~1, 2~3, ...: each model in one pair."""
    return [
        (a, b)
        for a, b in specimen_pairs(zoo)
        if a.spec.seed % 2 == 0 and b.spec.seed == a.spec.seed + 1
    ]


def evaluate_pairs(meta: Any, pairs: Sequence[tuple[Any, Any]]) -> list[PairRow]:
    """Rows for pairs of specimens of one architecture trained apart (data: the first's
    calibration batches)."""
    rows = []
    for a, b in pairs:
        graph, data = a.graph, a.calibration
        sa = collect(a.model, graph, data, config=CollectConfig(progress=False))
        sb = collect(b.model, graph, data, config=CollectConfig(progress=False))
        placed = {
            "learned": (
                permute(a.model, meta.policy(a.model, sa)),
                permute(b.model, meta.policy(b.model, sb)),
            ),
            "analytic": (
                canonicalize(a.model, graph, stats=sa),
                canonicalize(b.model, graph, stats=sb),
            ),
            "weight": (a.model, permute(b.model, align(a.model, b.model, graph))),
            "random": (a.model, b.model),
        }
        matched = {}
        for method, (ma, mb) in placed.items():
            cross = collect_cross(ma, mb, graph, data, config=CollectConfig(progress=False))
            values = [float(cross.corr(g).diagonal().mean()) for g in cross]
            matched[method] = sum(values) / len(values)
        rows.append(PairRow(f"{a.spec.name} ~ s{b.spec.seed}", matched))
    return rows


def table(specimens: Sequence[SpecimenRow], pairs: Sequence[PairRow], ratio: float) -> str:
    """The rows as text tables, with a mean row per split."""
    lines = [
        f"pruning {ratio:.0%} (test accuracy), order stability between calibration views "
        "(Spearman), reorganization (diagonality)",
        f"{'model':<26} {'split':<15} {'orig':>5} "
        + " ".join(f"{'p:' + m:>11}" for m in PRUNING)
        + " "
        + " ".join(f"{'stab:' + m:>13}" for m in ("learned", "analytic"))
        + " "
        + " ".join(f"{'diag:' + m:>13}" for m in SERIATION),
    ]

    def row(name: str, split: str, rs: Sequence[SpecimenRow]) -> str:
        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        return (
            f"{name:<26} {split:<15} {mean([r.accuracy for r in rs]):>5.3f} "
            + " ".join(f"{mean([r.pruned[m] for r in rs]):>11.3f}" for m in PRUNING)
            + " "
            + " ".join(
                f"{mean([r.stability[m] for r in rs]):>13.3f}" for m in ("learned", "analytic")
            )
            + " "
            + " ".join(f"{mean([r.diagonality[m] for r in rs]):>13.3f}" for m in SERIATION)
        )

    for r in specimens:
        lines.append(row(r.name, r.split, [r]))
    for split in dict.fromkeys(r.split for r in specimens):
        lines.append(row("mean", split, [r for r in specimens if r.split == split]))
    if pairs:
        lines += [
            "",
            "canonical form, each model alone: mean correlation of units at equal positions",
            f"{'pair':<34} " + " ".join(f"{m:>9}" for m in MATCHING),
        ]
        lines += [
            f"{p.name:<34} " + " ".join(f"{p.matched[m]:>9.3f}" for m in MATCHING) for p in pairs
        ]
        lines.append(
            f"{'mean':<34} "
            + " ".join(f"{sum(p.matched[m] for p in pairs) / len(pairs):>9.3f}" for m in MATCHING)
        )
    return "\n".join(lines)


def _rms(m: Any) -> torch.Tensor:
    return (m.comoment.diagonal() / m.count + m.mean.square()).sqrt()


def spearman(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Mean over groups (of 3+ units) of the rank correlation of two score vectors."""
    values = []
    for g, x in a.items():
        if x.numel() < 3:
            continue
        ra, rb = (v.argsort().argsort().to(torch.float64) for v in (x, b[g]))
        ra, rb = ra - ra.mean(), rb - rb.mean()
        values.append(float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-300)))
    return sum(values) / max(len(values), 1)
