"""`MetaNetwork`: message passing over a model's units, one score per unit.

Every round updates each unit's embedding from its neighbours in every relation of
`cipm.meta.inputs` (its correlated units in its group, by signed and by absolute correlation:
intra-layer; the units that feed it and the units it feeds through weights: inter-layer) and
from the means over its group and over all groups (global). A relation's message is a
weighted mean of the neighbours' embeddings, one sparse product (torch-geometric's ``spmm``);
every other map is applied unit by unit, and nothing reads a unit's position, so permuting a
model's units permutes the scores (equivariance) and the same weights serve groups of any
width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, spmm

from cipm.meta.config import MetaConfig
from cipm.meta.inputs import FEATURES, RELATIONS, MetaInput

__all__ = ["MetaNetwork"]


class _Relation(MessagePassing):
    """The weighted mean of the neighbours' embeddings under one relation, mapped by W."""

    def __init__(self, hidden: int) -> None:
        super().__init__(aggr="sum")
        self.lin = nn.Linear(hidden, hidden, bias=False)

    def forward(self, h: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return self.propagate(matrix, x=self.lin(h))

    def message_and_aggregate(self, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return spmm(matrix, x, reduce="sum")


class _Round(nn.Module):
    """One round of message passing at the three scales, with a residual update."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.relations = nn.ModuleDict({r: _Relation(hidden) for r in RELATIONS})
        width = (len(RELATIONS) + 3) * hidden
        self.update = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, g: MetaInput, hierarchical: bool) -> torch.Tensor:
        group_mean = scatter(h, g.node_group, dim=0, dim_size=len(g.groups), reduce="mean")
        every = group_mean.mean(0, keepdim=True).expand_as(h)
        parts = [h, group_mean[g.node_group], every if hierarchical else torch.zeros_like(h)]
        for name, relation in self.relations.items():
            between = name in ("inputs", "outputs")
            use = hierarchical or not between
            parts.append(relation(h, g.relations[name]) if use else torch.zeros_like(h))
        return self.norm(h + self.update(torch.cat(parts, 1)))


class MetaNetwork(nn.Module):
    """Scores (nodes,) for a `MetaInput`: encode features, `config.layers` rounds, read out."""

    def __init__(self, config: MetaConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.encode = nn.Sequential(nn.Linear(len(FEATURES), h), nn.ReLU(), nn.Linear(h, h))
        self.rounds = nn.ModuleList(_Round(h) for _ in range(config.layers))
        self.read = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
        self.double()

    def forward(self, g: MetaInput) -> torch.Tensor:
        h = self.encode(g.x)
        for r in self.rounds:
            h = r(h, g, self.config.hierarchical)
        return self.read(h).squeeze(-1)
