"""`MatchedAveraging`: a Flower strategy (Message API) whose aggregation is matched averaging.

It is Flower's own `FedAvg` (sampling, messages, metrics, evaluation are FedAvg's) with one
change: instead of averaging the clients' arrays position by position, each round aligns
every client to the global model it started from and averages the aligned models
(`aggregate_updates`, a pure function tested without Flower). Needs the ``federated``
extra: ``pip install 'cipm[federated]'``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.federated.config import MatchConfig, match_config
from cipm.federated.updates import ClientUpdate, aggregate_updates, split_update
from cipm.graph.symmetry import SymmetryGraph

try:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg
except ImportError as e:  # pragma: no cover - the extra is part of `make setup`
    raise CipmError(
        "cipm.federated.MatchedAveraging needs Flower: pip install 'cipm[federated]'"
    ) from e

__all__ = ["MatchedAveraging", "updates_from_replies"]


class MatchedAveraging(FedAvg):
    """FedAvg with matched averaging: clients are aligned to the global model, then averaged.

    Clients reply as to FedAvg: one `ArrayRecord` (their state dict, built with
    `cipm.federated.update_arrays`, which adds their cross statistics for activation
    matching) and one `MetricRecord` holding their example count under `weighted_by_key`.

    Args:
        model: a model of the federated architecture (a template: its values are unused).
        graph: its symmetry graph, ``cipm.trace(model, example_inputs)``.
        data: server-side batches (inputs only) to reset BatchNorm and REPAIR on, if any.
        config: how each round matches and averages (`MatchConfig`: its `method` is
            ``"weight"`` by default, ``"activation"`` from the clients' statistics or from
            `data`, or any `cipm.align_methods()` name; ``repair=True`` REPAIRs the average
            each round and needs `data`).
        **fedavg: FedAvg's own arguments (fraction_train, min_train_nodes, ...).

    Raises:
        CipmError: `repair` without `data`, or a `config` that is not a `MatchConfig`.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        graph: SymmetryGraph,
        data: Iterable[Any] | None = None,
        config: MatchConfig | None = None,
        **fedavg: Any,
    ) -> None:
        super().__init__(**fedavg)
        config = match_config(config)
        if config.repair and data is None:
            raise CipmError(
                "MatchedAveraging(config=MatchConfig(repair=True)) needs data at the server"
            )
        self.model, self.graph, self.config = model, graph, config
        self.data = list(data) if data is not None else None
        self._global: dict[str, torch.Tensor] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's, remembering the global arrays this round's clients start from."""
        self._global = arrays.to_torch_state_dict()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Matched averaging of the valid replies; metrics as FedAvg aggregates them."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._global is None:
            raise CipmError("aggregate_train before configure_train: no global model to align to")
        contents = [msg.content for msg in valid]
        state = aggregate_updates(
            self.model,
            self.graph,
            self._global,
            updates_from_replies(contents, self.graph, self.weighted_by_key),
            data=self.data,
            config=self.config,
        )
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return ArrayRecord(state), metrics

    def summary(self) -> None:
        """FedAvg's summary, and what is matched."""
        super().summary()
        from flwr.supercore import log

        method = getattr(self.config.method, "__name__", self.config.method)
        log(20, "\t└──> Matched averaging: method %s over %d groups", method, len(self.graph))


def updates_from_replies(
    contents: list[RecordDict], graph: SymmetryGraph, weighted_by_key: str = "num-examples"
) -> list[ClientUpdate]:
    """The `ClientUpdate`s in the contents of clients' replies (checked by FedAvg's
    consistency check: one ArrayRecord and one MetricRecord each)."""
    updates = []
    for content in contents:
        arrays = next(iter(content.array_records.values())).to_torch_state_dict()
        metrics = next(iter(content.metric_records.values()))
        state, statistics = split_update(arrays, graph)
        weight = metrics[weighted_by_key]
        if not isinstance(weight, int | float):
            raise CipmError(f"a client's '{weighted_by_key}' is not a number: {weight!r}")
        updates.append(ClientUpdate(state, float(weight), statistics))
    return updates
