"""`matched_average`: federated averaging that aligns every client to the global model first.

FedAvg averages the clients' tensors position by position, which assumes unit i of every
client is the same unit. Training on different data (label skew) or from different starts
breaks that; matched averaging first finds, per client, the permutation that lines its units
up with the global model's (FedMA's idea, here over every group the symmetry graph finds, in
one assignment per group), then averages, then re-estimates what averaging breaks (BatchNorm
statistics, REPAIR) where the server has data.

Data never has to leave a client: for activation matching each client sends the cross
statistics of the global model's units against its own (`cipm.collect_cross` on its own
data, float64 sufficient statistics that merge and all-reduce exactly), never the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch

from cipm.alignment.activation import matching_from_statistics
from cipm.alignment.dispatch import align
from cipm.alignment.methods import checked_state
from cipm.errors import CipmError
from cipm.federated.config import MatchConfig, match_config
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.merging.average import merge
from cipm.statistics.group import CrossStatistics
from cipm.tensors.modify import permute

__all__ = ["match_clients", "matched_average"]


def matched_average(
    global_model: torch.nn.Module,
    client_models: Sequence[torch.nn.Module],
    graph: SymmetryGraph,
    *,
    stats: Sequence[CrossStatistics] | None = None,
    weights: Sequence[float] | None = None,
    data: Iterable[Any] | None = None,
    config: MatchConfig | None = None,
) -> torch.nn.Module:
    """A new global model: every client aligned to `global_model`, then averaged.

    A pure function: the models passed in are never changed.

    Args:
        global_model: the reference the clients are aligned to (in a federated round, the
            model they started from; for one-shot merging, any one of them).
        client_models: one or more models of the same architecture, fitting `graph`.
        graph: the symmetry graph, from `cipm.trace`.
        stats: for ``MatchConfig(method="activation")`` without server data: per client,
            the cross statistics of the global model's units (A) against the client's (B)
            that the client computed on its own data, ``cipm.collect_cross(global_model,
            client, graph, its_data)``; shards of one client merge exactly
            (`CrossStatistics.merge`).
        weights: relative weight of each client (e.g. its number of examples), normalized
            to sum to 1; default: equal.
        data: batches the server may use (a public or calibration set; inputs only): then
            BatchNorm statistics are recomputed on them after averaging, and with
            ``MatchConfig(repair=True)`` every unit is REPAIRed (`cipm.merge`). Without it,
            BatchNorm buffers are averaged (aligned), as FedAvg does.
        config: the alignment method, REPAIR, passes and alignment settings
            (`MatchConfig`; default: weight matching, one pass, no REPAIR).

    Returns:
        A new model of the clients' class, in the global model's unit order.

    Raises:
        CipmError: no clients, a model that does not fit the graph (naming the client),
            statistics of the wrong number or graph, weights that are not positive and
            finite, `repair` without `data`, `passes` with statistics, or a `config` that
            is not a `MatchConfig`.
    """
    clients = _check_clients(client_models)
    config = match_config(config)
    passes = config.passes
    if passes > 1 and stats is not None:
        raise CipmError(
            "passes > 1 realigns the clients to the average, for which the clients' "
            "statistics (taken against the global model) do not hold: use passes=1 with stats"
        )
    if config.repair and data is None:
        raise CipmError("MatchConfig(repair=True) needs data to measure the average on")
    shares = _shares(weights, len(clients))
    reference = global_model
    merged = global_model
    for i in range(passes):
        perms = match_clients(
            reference,
            clients,
            graph,
            stats=stats,
            data=data,
            config=config if i == 0 else replace(config, method="weight"),
        )
        aligned = [permute(c, p) for c, p in zip(clients, perms, strict=True)]
        if len(aligned) == 1:  # merge takes two or more: the average of a model with itself
            aligned, shares_now = aligned * 2, [0.5, 0.5]
        else:
            shares_now = shares
        # BatchNorm reset and REPAIR only on the last pass; earlier ones feed weight matching
        last = i == passes - 1
        merged = merge(
            aligned,
            graph,
            weights=shares_now,
            data=data if last else None,
            repair=config.repair and last,
        )
        reference = merged
    return merged


def match_clients(
    global_model: torch.nn.Module,
    client_models: Sequence[torch.nn.Module],
    graph: SymmetryGraph,
    *,
    stats: Sequence[CrossStatistics] | None = None,
    data: Iterable[Any] | None = None,
    config: MatchConfig | None = None,
) -> list[Permutation]:
    """Per client, the permutation `p` such that ``cipm.permute(client, p)`` lines up with
    `global_model` (the arguments are those of `matched_average`; of `config`, only
    `method` and `align` are used).

    Raises:
        CipmError: as `matched_average`, naming the client that failed.
    """
    clients = _check_clients(client_models)
    config = match_config(config)
    method, align_config = config.method, config.align
    if stats is not None:
        _check_stats(stats, clients, graph, method)
        state_global = checked_state(global_model, graph, "global_model")
    elif method == "activation" and data is None:
        raise CipmError(
            "activation matching needs statistics from each client (stats=[collect_cross("
            "global_model, client, graph, client_data), ...]) or data at the server"
        )
    perms = []
    for i, client in enumerate(clients):
        try:
            if stats is not None:
                state = checked_state(client, graph, f"client_models[{i}]")
                perms.append(matching_from_statistics(state_global, state, stats[i], align_config))
            else:
                perms.append(
                    align(
                        global_model, client, graph, method=method, data=data, config=align_config
                    )
                )
        except CipmError as e:
            raise CipmError(f"aligning client {i} to the global model: {e}") from e
    return perms


def _check_clients(client_models: Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    if isinstance(client_models, torch.nn.Module) or not isinstance(client_models, Sequence):
        raise CipmError(
            "client_models must be a list of models, got a "
            f"{type(client_models).__name__}: matched_average(global_model, [a, b], graph)"
        )
    if not client_models:
        raise CipmError("matched_average needs at least one client model")
    return list(client_models)


def _check_stats(
    stats: Sequence[CrossStatistics],
    clients: list[torch.nn.Module],
    graph: SymmetryGraph,
    method: Any,
) -> None:
    if method != "activation":
        raise CipmError(f"client statistics are for method='activation', not {method!r}")
    if isinstance(stats, CrossStatistics) or len(stats) != len(clients):
        got = 1 if isinstance(stats, CrossStatistics) else len(stats)
        raise CipmError(
            f"{got} statistics given for {len(clients)} clients: pass one CrossStatistics "
            "per client, in the clients' order"
        )
    for i, s in enumerate(stats):
        if not isinstance(s, CrossStatistics):
            raise CipmError(
                f"stats[{i}] is a {type(s).__name__}, not CrossStatistics: each client "
                "sends cipm.collect_cross(global_model, client_model, graph, its_data)"
            )
        if s.graph != graph:
            raise CipmError(f"stats[{i}] were collected with another symmetry graph")


def _shares(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise CipmError(f"weights must be a list of numbers, got {weights!r}") from None
    if len(values) != n:
        raise CipmError(f"{len(values)} weights given for {n} clients")
    if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise CipmError(f"weights must be finite, non-negative and not all 0, got {values}")
    total = sum(values)
    return [w / total for w in values]
