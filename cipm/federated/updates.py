"""What a client sends back after a round, as plain named tensors, and the server's
aggregation of those updates: the pure function under the Flower strategy.

A client's reply is one flat mapping of names to tensors (Flower carries it as one
`ArrayRecord`): its model's state dict, plus, for activation matching, its cross statistics
under keys that start with `STATISTICS_PREFIX` (state-dict keys never contain "/").
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.federated.average import matched_average
from cipm.federated.config import MatchConfig
from cipm.graph.symmetry import SymmetryGraph
from cipm.statistics.group import CrossStatistics
from cipm.statistics.moments import CrossMoments, Moments

__all__ = [
    "STATISTICS_PREFIX",
    "ClientUpdate",
    "aggregate_updates",
    "split_update",
    "update_arrays",
]

STATISTICS_PREFIX = "cipm.statistics/"
_FIELDS = ("count", "mean_a", "comoment_a", "mean_b", "comoment_b", "cross")


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply to a training round.

    Attributes:
        state: the client's trained tensors (a state dict of the global model's architecture).
        num_examples: how many examples it trained on (its weight in the average).
        statistics: for activation matching, the cross statistics of the global model's
            units (A) against the client's (B) on the client's own data.
    """

    state: Mapping[str, torch.Tensor]
    num_examples: float
    statistics: CrossStatistics | None = None


def update_arrays(
    model: torch.nn.Module, statistics: CrossStatistics | None = None
) -> dict[str, torch.Tensor]:
    """The tensors a client sends: its state dict, and its cross statistics if any."""
    arrays = {k: v.detach() for k, v in model.state_dict().items()}
    if statistics is not None:
        for name in statistics:
            m = statistics[name]
            count = torch.tensor(m.a.count)
            values = (count, m.a.mean, m.a.comoment, m.b.mean, m.b.comoment, m.cross)
            for field, value in zip(_FIELDS, values, strict=True):
                arrays[f"{STATISTICS_PREFIX}{name}/{field}"] = value
    return arrays


def split_update(
    arrays: Mapping[str, torch.Tensor], graph: SymmetryGraph
) -> tuple[dict[str, torch.Tensor], CrossStatistics | None]:
    """A client's tensors back as (state dict, cross statistics or None).

    Raises:
        CipmError: statistics that are incomplete or not of `graph`'s groups.
    """
    if not isinstance(arrays, Mapping):
        raise CipmError(f"a client's update is a mapping of names to tensors, got {arrays!r:.80}")
    if not isinstance(graph, SymmetryGraph):
        raise CipmError(f"split_update needs the SymmetryGraph, got {type(graph).__name__}")
    odd = [k for k in arrays if not isinstance(k, str)]
    if odd:
        raise CipmError(f"a client's update names its tensors with strings, got keys {odd[:5]!r}")
    state = {k: v for k, v in arrays.items() if not k.startswith(STATISTICS_PREFIX)}
    fields: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        if key.startswith(STATISTICS_PREFIX):
            group, _, field = key[len(STATISTICS_PREFIX) :].rpartition("/")
            fields.setdefault(group, {})[field] = value
    if not fields:
        return state, None
    unknown = sorted(set(fields) - {g.name for g in graph})
    if unknown:
        raise CipmError(f"client statistics of groups the graph does not have: {unknown}")
    moments = {group: _checked_moments(group, f, graph[group].size) for group, f in fields.items()}
    return state, CrossStatistics(graph, moments)


def _checked_moments(group: str, f: Mapping[str, torch.Tensor], n: int) -> CrossMoments:
    """A client's cross moments of one group, once every field is known to be sound: a
    single whole count >= 1, means of n and co-moments of n x n finite values."""
    missing = [name for name in _FIELDS if name not in f]
    if missing:
        raise CipmError(f"client statistics of group '{group}' lack {missing}")
    extra = sorted(set(f) - set(_FIELDS))
    if extra:
        raise CipmError(f"client statistics of group '{group}' have unknown fields {extra}")
    raw = _dense(f["count"], group, "count")
    if (
        raw.numel() != 1
        or raw.is_floating_point()
        or raw.is_complex()
        or raw.dtype == torch.bool
        or int(raw) < 1
    ):
        raise CipmError(
            f"client statistics of group '{group}': the count must be one whole number >= 1, "
            f"got {raw.tolist()}"
        )
    t = {k: _dense(v, group, k).to(torch.float64) for k, v in f.items() if k != "count"}
    for name, value in t.items():
        shape = (n,) if name.startswith("mean") else (n, n)
        if tuple(value.shape) != shape or not bool(torch.isfinite(value).all()):
            raise CipmError(
                f"client statistics of group '{group}': '{name}' must be {shape} finite "
                f"values, got {tuple(value.shape)}"
                + ("" if tuple(value.shape) != shape else " with NaN or Inf")
            )
    count = int(raw)
    a = Moments(count, t["mean_a"], t["comoment_a"])
    b = Moments(count, t["mean_b"], t["comoment_b"])
    return CrossMoments(a, b, t["cross"])


def _dense(value: Any, group: str, field: str) -> torch.Tensor:
    """A field of a client's statistics as a real, dense CPU tensor."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        t = None
    if (
        t is None
        or t.layout != torch.strided
        or t.device.type == "meta"
        or t.is_complex()
        or not (t.is_floating_point() or t.dtype in _WHOLE)
    ):
        raise CipmError(
            f"client statistics of group '{group}': '{field}' must be a tensor of real "
            f"numbers, got {value!r:.80}"
        )
    return t.cpu()


_WHOLE = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def aggregate_updates(
    template: torch.nn.Module,
    graph: SymmetryGraph,
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    *,
    data: Iterable[Any] | None = None,
    config: MatchConfig | None = None,
) -> dict[str, torch.Tensor]:
    """The next global state dict: `matched_average` of the clients' updates, weighted by
    their example counts, aligned to the global state they started from.

    Args:
        template: a model of the architecture (its values are not used, nor changed).
        graph: its symmetry graph. global_state: this round's global model's tensors.
        updates: the clients' replies. data, config: as `matched_average`; with
            ``MatchConfig(method="activation")``, every update must carry statistics unless
            `data` is given.

    Raises:
        CipmError: no updates, states that do not fit the template, or statistics missing
            from some updates but not others.
    """
    if isinstance(updates, ClientUpdate) or not isinstance(updates, Sequence):
        raise CipmError(f"updates must be a list of ClientUpdate, got {type(updates).__name__}")
    if not updates:
        raise CipmError("aggregate_updates needs at least one client update")
    for i, u in enumerate(updates):
        if not isinstance(u, ClientUpdate):
            raise CipmError(f"updates[{i}] is a {type(u).__name__}, not a ClientUpdate")
    with_stats = [u.statistics is not None for u in updates]
    if any(with_stats) and not all(with_stats):
        raise CipmError(
            f"{sum(with_stats)} of {len(updates)} client updates carry statistics: all or none must"
        )
    global_model = _loaded(template, global_state, "the global state")
    clients = [_loaded(template, u.state, f"update {i}") for i, u in enumerate(updates)]
    stats = [u.statistics for u in updates if u.statistics is not None] or None
    merged = matched_average(
        global_model,
        clients,
        graph,
        stats=stats,
        weights=[u.num_examples for u in updates],
        data=data,
        config=config,
    )
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _loaded(
    template: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> torch.nn.Module:
    if not isinstance(state, Mapping):
        raise CipmError(f"{what} must be a mapping of names to tensors, got {type(state).__name__}")
    try:
        tensors = {k: torch.as_tensor(v) for k, v in state.items()}
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise CipmError(f"{what} holds a value that is not a tensor: {e}") from None
    model = copy.deepcopy(template)
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, TypeError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise CipmError(f"{what} does not fit {type(template).__name__}: {detail}") from None
    return model.eval()
